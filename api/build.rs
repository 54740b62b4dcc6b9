//! `embed_migrations!` only re-reads the migrations folder when cargo reruns the build;
//! this makes a new or edited migration trigger that.
fn main() {
    println!("cargo:rerun-if-changed=../migrations");
}
