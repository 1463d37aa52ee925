//! Gives the shared library its soname, `libkeyward.so.<ABI version>`:
//! the ABI version is raised by any change that would break a program
//! built against an older `keyward.h` (see the policy at the top of it).

/// The one place the ABI version is written; `kw_abi_version()` and the
/// header's `KW_ABI_VERSION` are generated from it.
const ABI_VERSION: u32 = 1;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rustc-env=KEYWARD_ABI_VERSION={ABI_VERSION}");
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux") {
        println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libkeyward.so.{ABI_VERSION}");
    }
}
