//! Compiles the XDP program (`ebpf/mld_xdp.bpf.c`) with clang into OUT_DIR; the crate
//! embeds the object. A missing clang or libbpf header fails the build with the Debian
//! packages to install.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let ebpf = manifest.join("../../ebpf");
    let source = ebpf.join("mld_xdp.bpf.c");
    let include = ebpf.join("include");
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR")).join("mld_xdp.bpf.o");
    println!("cargo:rerun-if-changed={}", source.display());
    println!("cargo:rerun-if-changed={}", include.join("mld_shared.h").display());
    println!("cargo:rerun-if-env-changed=MLD_CLANG");
    let clang = std::env::var("MLD_CLANG").unwrap_or_else(|_| "clang".to_string());
    let result = Command::new(&clang)
        .args(["-O2", "-g", "-target", "bpf", "-Wall", "-Werror"])
        .arg("-I/usr/include/x86_64-linux-gnu")
        .arg(format!("-I{}", include.display()))
        .arg("-c")
        .arg(&source)
        .arg("-o")
        .arg(&out)
        .output();
    match result {
        Ok(output) if output.status.success() => {}
        Ok(output) => panic!(
            "failed to compile the XDP program {} with {clang}:\n{}\n\
             (needs Debian packages: clang llvm libbpf-dev linux-libc-dev; scripts/setup installs them)",
            source.display(),
            String::from_utf8_lossy(&output.stderr)
        ),
        Err(error) => panic!(
            "cannot run `{clang}` to compile the XDP program: {error}\n\
             install Debian packages clang llvm libbpf-dev linux-libc-dev (scripts/setup does)"
        ),
    }
}
