//! The one list-format type: the StatusList resource names it (`spec.format`), the store
//! records it per pool and list, a list URI says it by its path segment, and a verifier
//! reads the list by it.

use crate::FormatError;
use crate::bitstring;

/// Which kind of status list: an IETF Token Status List (JWT or CWT, served at `.../t/ID`)
/// or a W3C Bitstring Status List credential (`vc+jwt`, served at `.../b/ID`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub enum ListFormat {
    Token,
    Bitstring,
}

impl ListFormat {
    /// The name the resource and the database use.
    pub fn as_str(self) -> &'static str {
        match self {
            ListFormat::Token => "Token",
            ListFormat::Bitstring => "Bitstring",
        }
    }

    /// The URI path segment of the format.
    pub fn path(self) -> &'static str {
        match self {
            ListFormat::Token => "t",
            ListFormat::Bitstring => "b",
        }
    }

    /// The format of a list URI (`http(s)://host/.../t/ID` or `.../b/ID`), or `None`.
    pub fn of_uri(uri: &str) -> Option<Self> {
        if !(uri.starts_with("https://") || uri.starts_with("http://")) {
            return None;
        }
        let mut parts = uri.rsplitn(3, '/');
        let (_id, kind, _base) = (parts.next()?, parts.next()?, parts.next()?);
        match kind {
            "t" => Some(Self::Token),
            "b" => Some(Self::Bitstring),
            _ => None,
        }
    }

    /// The media type a verifier asks for: the JWT encoding of either format.
    pub fn media_type(self) -> &'static str {
        match self {
            Self::Token => "application/statuslist+jwt",
            Self::Bitstring => bitstring::VC_JWT_MEDIA_TYPE,
        }
    }
}

impl std::str::FromStr for ListFormat {
    type Err = FormatError;
    fn from_str(s: &str) -> Result<Self, FormatError> {
        match s {
            "Token" => Ok(ListFormat::Token),
            "Bitstring" => Ok(ListFormat::Bitstring),
            other => Err(FormatError::UnknownListFormat(other.to_owned())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::ListFormat;

    #[test]
    fn of_uri() {
        assert_eq!(
            ListFormat::of_uri("https://h/x/t/ABC"),
            Some(ListFormat::Token)
        );
        assert_eq!(
            ListFormat::of_uri("http://h/b/ABC"),
            Some(ListFormat::Bitstring)
        );
        assert_eq!(ListFormat::of_uri("https://h/x/ABC"), None);
        assert_eq!(ListFormat::of_uri("ftp://h/t/ABC"), None);
        assert_eq!(ListFormat::of_uri("t/ABC"), None);
    }

    #[test]
    fn names_round_trip() {
        for f in [ListFormat::Token, ListFormat::Bitstring] {
            assert_eq!(f.as_str().parse::<ListFormat>().expect("parsed"), f);
        }
        assert!("token".parse::<ListFormat>().is_err());
    }
}
