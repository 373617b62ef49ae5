//! Rebuild when a migration is added: `sqlx::migrate!` embeds the files it
//! saw, but does not notice new ones on its own.

fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
