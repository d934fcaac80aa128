//! Links crust-shim as a position-dependent executable. A PIE this size
//! carries ~700 KB of relocations that the loader applies at every start,
//! dirtying ~500 KB of `.data.rel.ro` in every shim; without PIE those
//! pages stay clean and shared between all the pods' shims.
fn main() {
    println!("cargo:rustc-link-arg-bins=-no-pie");
}
