//! The integration tests (`*.rs` beside this file) and benchmarks
//! (`benches/`) of the keyward workspace. Nothing here is for use: cargo
//! needs a library or a binary in every package, and this is the library.
