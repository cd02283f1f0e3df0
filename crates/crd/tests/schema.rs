//! The CRD: committed YAML current, schema rules enforced (OpenAPI structure and CEL, as
//! the apiserver applies them), examples accepted. A client-side approximation that runs
//! without a cluster; the real kube-apiserver (with its CEL cost budget) is in
//! `tests/tests/crd.rs`.

use kube::CustomResourceExt;
use serde_json::{Value, json};
use statuslist_crd::{StatusList, crd_yaml};

fn repo(path: &str) -> String {
    format!("{}/../../{path}", env!("CARGO_MANIFEST_DIR"))
}

fn schema() -> Value {
    let crd = serde_json::to_value(StatusList::crd()).expect("json");
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone()
}

/// `kubectl explain` wraps descriptions itself: a line break carried over from a doc
/// comment would show in the middle of a sentence.
#[test]
fn descriptions_have_no_line_breaks_inside_a_paragraph() {
    fn walk(v: &Value, path: &str, found: &mut Vec<String>) {
        match v {
            Value::Object(map) => {
                for (k, v) in map {
                    if let (true, Some(text)) = (k == "description", v.as_str())
                        && text.split("\n\n").any(|p| p.contains('\n'))
                    {
                        found.push(path.to_owned());
                    }
                    walk(v, &format!("{path}/{k}"), found);
                }
            }
            Value::Array(items) => items.iter().for_each(|i| walk(i, path, found)),
            _ => {}
        }
    }
    let text = std::fs::read_to_string(repo("crds/statuslist.dev_statuslists.yaml")).expect("CRD");
    let crd: Value = serde_yaml_ng::from_str(&text).expect("yaml");
    let mut found = Vec::new();
    walk(&crd, "", &mut found);
    assert!(
        found.is_empty(),
        "descriptions with a line break: {found:?}"
    );
}

#[test]
fn committed_crds_are_current() {
    for (file, current, command) in [
        (
            "crds/statuslist.dev_statuslists.yaml",
            crd_yaml(),
            "statuslist crd",
        ),
        (
            "charts/statuslist/templates/crd.yaml",
            statuslist_crd::crd_helm_template(),
            "statuslist crd --helm",
        ),
    ] {
        let path = repo(file);
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            committed == current,
            "{path} is out of date: regenerate it with `{command} > {file}`"
        );
    }
}

/// The structural part of the apiserver's validation: types, enums, bounds, required
/// members, no unknown fields, unique list-map keys. Defaults are applied first.
fn structural(schema: &Value, value: &mut Value, at: &str) -> Vec<String> {
    let mut errors = Vec::new();
    if let (Some(props), Some(obj)) = (
        schema.get("properties").and_then(Value::as_object),
        value.as_object_mut(),
    ) {
        for (name, sub) in props {
            if !obj.contains_key(name)
                && let Some(d) = sub.get("default")
            {
                obj.insert(name.clone(), d.clone());
            }
        }
    }
    if value.is_null() && schema.get("nullable") == Some(&json!(true)) {
        return errors;
    }
    let ty = schema.get("type").and_then(Value::as_str);
    let ok = match ty {
        Some("object") => value.is_object(),
        Some("array") => value.is_array(),
        Some("string") => value.is_string(),
        Some("integer") => value.is_i64() || value.is_u64(),
        Some("boolean") => value.is_boolean(),
        _ => true,
    };
    if !ok {
        errors.push(format!("{at}: expected {ty:?}, got {value}"));
        return errors;
    }
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array)
        && !allowed.contains(value)
    {
        errors.push(format!("{at}: {value} not one of {allowed:?}"));
    }
    if let (Some(min), Some(v)) = (
        schema.get("minimum").and_then(Value::as_f64),
        value.as_f64(),
    ) && v < min
    {
        errors.push(format!("{at}: {v} below {min}"));
    }
    if let (Some(max), Some(v)) = (
        schema.get("maximum").and_then(Value::as_f64),
        value.as_f64(),
    ) && v > max
    {
        errors.push(format!("{at}: {v} above {max}"));
    }
    if let Some(s) = value.as_str() {
        let len = s.chars().count() as f64;
        if schema
            .get("minLength")
            .and_then(Value::as_f64)
            .is_some_and(|m| len < m)
        {
            errors.push(format!("{at}: shorter than minLength"));
        }
        if schema
            .get("maxLength")
            .and_then(Value::as_f64)
            .is_some_and(|m| len > m)
        {
            errors.push(format!("{at}: longer than maxLength"));
        }
    }
    if let Some(items) = value.as_array()
        && schema
            .get("maxItems")
            .and_then(Value::as_f64)
            .is_some_and(|m| items.len() as f64 > m)
    {
        errors.push(format!("{at}: more than maxItems"));
    }
    if let Some(obj) = value.as_object_mut() {
        let props = schema.get("properties").and_then(Value::as_object);
        for r in schema
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let r = r.as_str().expect("name");
            if !obj.contains_key(r) {
                errors.push(format!("{at}: missing {r}"));
            }
        }
        for (name, v) in obj.iter_mut() {
            match props.and_then(|p| p.get(name)) {
                Some(sub) => errors.extend(structural(sub, v, &format!("{at}.{name}"))),
                None => {
                    // The object envelope is checked by the apiserver itself.
                    let envelope = at.is_empty()
                        && matches!(name.as_str(), "apiVersion" | "kind" | "metadata");
                    if props.is_some() && !envelope {
                        errors.push(format!("{at}: unknown field {name}"));
                    }
                }
            }
        }
    }
    if let Some(items) = value.as_array_mut() {
        let keys: Vec<String> = schema
            .get("x-kubernetes-list-map-keys")
            .and_then(Value::as_array)
            .map(|k| {
                k.iter()
                    .filter_map(|k| k.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        let mut seen = std::collections::HashSet::new();
        for (i, item) in items.iter_mut().enumerate() {
            if !keys.is_empty() {
                let key: Vec<Value> = keys.iter().map(|k| item[k].clone()).collect();
                if !seen.insert(serde_json::to_string(&key).expect("json")) {
                    errors.push(format!("{at}[{i}]: duplicate entry for key {key:?}"));
                }
            }
            if let Some(sub) = schema.get("items") {
                errors.extend(structural(sub, item, &format!("{at}[{i}]")));
            }
        }
    }
    errors
}

/// Every error the apiserver would raise for `object` (and `old`, for updates).
fn admit(object: &Value, old: Option<&Value>) -> Vec<String> {
    let schema = schema();
    let mut defaulted = object.clone();
    let mut errors = structural(&schema, &mut defaulted, "");
    if errors.is_empty()
        && let Err(cel) = kube::core::cel::Validator::new().validate(&schema, object, old)
    {
        errors.extend(cel.into_vec().into_iter().map(|e| e.to_string()));
    }
    errors
}

fn object(spec: Value) -> Value {
    json!({"apiVersion": "statuslist.dev/v1alpha1", "kind": "StatusList", "metadata": {"name": "x", "namespace": "default"}, "spec": spec})
}

fn minimal(format: &str) -> Value {
    json!({"format": format, "baseUri": "https://crs.example.gov.uk", "issuers": [{"clientId": "a", "jwksUri": "https://a.example/jwks"}]})
}

fn with(format: &str, key: &str, v: Value) -> Value {
    let mut s = minimal(format);
    s[key] = v;
    object(s)
}

#[test]
fn examples_are_accepted() {
    for name in ["examples/token.yaml", "examples/bitstring.yaml"] {
        let text = std::fs::read_to_string(repo(name)).expect("example");
        let value: Value = serde_yaml_ng::from_str(&text).expect("yaml");
        assert_eq!(admit(&value, None), Vec::<String>::new(), "{name}");
        let typed: StatusList = serde_json::from_value(value).expect("deserialises");
        assert!(!typed.spec.issuers.is_empty());
    }
}

#[test]
fn valid_specs_pass() {
    for spec in [minimal("Token"), minimal("Bitstring")] {
        assert_eq!(admit(&object(spec), None), Vec::<String>::new());
    }
    assert!(
        admit(
            &with("Token", "baseUri", json!("http://127.0.0.1:8080/status")),
            None
        )
        .is_empty()
    );
    assert!(
        admit(&with("Token", "entriesPerList", json!(1000)), None).is_empty(),
        "the default leaseSize (1000) fits"
    );
}

/// Every case of the shared rejection table this client-side check covers (the real
/// apiserver checks them all: `tests/tests/crd.rs`).
#[test]
fn invalid_specs_are_rejected_with_a_message() {
    let cases = statuslist_crd::rejections::rejections();
    let mut failures = Vec::new();
    for case in &cases {
        let Some(expected) = case.locally else {
            continue;
        };
        let errors = admit(&object(case.spec.clone()), None);
        if !errors.iter().any(|e| e.contains(expected)) {
            failures.push(format!(
                "{}: expected {expected:?}, got {errors:?}",
                case.spec
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(cases.iter().filter(|c| c.locally.is_some()).count() >= 25);
}

#[test]
fn format_and_bits_are_immutable() {
    let old = object(minimal("Token"));
    let errors = admit(&object(minimal("Bitstring")), Some(&old));
    assert!(
        errors.iter().any(|e| e.contains("format is immutable")),
        "{errors:?}"
    );
    let errors = admit(&with("Token", "bits", json!(4)), Some(&old));
    assert!(
        errors.iter().any(|e| e.contains("bits is immutable")),
        "{errors:?}"
    );
    assert!(
        admit(&with("Token", "ttlSeconds", json!(60)), Some(&old)).is_empty(),
        "other fields may change"
    );
}

#[test]
fn printer_columns_and_names() {
    let crd = serde_json::to_value(StatusList::crd()).expect("json");
    assert_eq!(crd["spec"]["names"]["shortNames"], json!(["sl"]));
    assert_eq!(crd["spec"]["scope"], "Namespaced");
    assert_eq!(
        crd["spec"]["versions"][0]["subresources"]["status"],
        json!({})
    );
    let columns: Vec<&str> = crd["spec"]["versions"][0]["additionalPrinterColumns"]
        .as_array()
        .expect("columns")
        .iter()
        .map(|c| c["name"].as_str().expect("name"))
        .collect();
    assert_eq!(
        columns,
        [
            "Format",
            "Lists",
            "Allocated",
            "Free",
            "Ready",
            "Reconciled",
            "Age"
        ]
    );
}
