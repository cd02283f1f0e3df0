//! Prints the StatusList CRD (`cargo run -p statuslist-crd --example crdgen > crds/statuslist.dev_statuslists.yaml`).
fn main() {
    print!("{}", statuslist_crd::crd_yaml());
}
