//! The kernel/user contract: `struct mld_packet_record` in `ebpf/include/mld_shared.h`
//! and its Rust mirror must agree in size and in every field offset. Compiles the
//! header with the system C compiler and compares.

use std::mem::{offset_of, size_of};
use std::path::PathBuf;
use std::process::Command;

use mld_packet::PacketRecord;

#[test]
fn packet_record_layout_matches_the_c_header() {
    let include = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../ebpf/include");
    let fields: Vec<(&str, usize)> = vec![
        ("ts_ns", offset_of!(PacketRecord, ts_ns)),
        ("src_addr", offset_of!(PacketRecord, src_addr)),
        ("dst_addr", offset_of!(PacketRecord, dst_addr)),
        ("ifindex", offset_of!(PacketRecord, ifindex)),
        ("wire_len", offset_of!(PacketRecord, wire_len)),
        ("src_port", offset_of!(PacketRecord, src_port)),
        ("dst_port", offset_of!(PacketRecord, dst_port)),
        ("ip_len", offset_of!(PacketRecord, ip_len)),
        ("ip_header_len", offset_of!(PacketRecord, ip_header_len)),
        ("l4_header_len", offset_of!(PacketRecord, l4_header_len)),
        ("payload_len", offset_of!(PacketRecord, payload_len)),
        ("tcp_window", offset_of!(PacketRecord, tcp_window)),
        ("ip_version", offset_of!(PacketRecord, ip_version)),
        ("protocol", offset_of!(PacketRecord, protocol)),
        ("tcp_flags", offset_of!(PacketRecord, tcp_flags)),
        ("ttl", offset_of!(PacketRecord, ttl)),
        ("direction", offset_of!(PacketRecord, direction)),
        ("flags", offset_of!(PacketRecord, flags)),
        ("_pad", offset_of!(PacketRecord, _pad)),
    ];
    let mut program = String::from("#include <stdio.h>\n#include <stddef.h>\n#include \"mld_shared.h\"\nint main(void) {\n");
    program.push_str("    printf(\"size %zu\\n\", sizeof(struct mld_packet_record));\n");
    for (field, _) in &fields {
        program.push_str(&format!("    printf(\"{field} %zu\\n\", offsetof(struct mld_packet_record, {field}));\n"));
    }
    program.push_str("    return 0;\n}\n");
    let dir = tempfile::tempdir().expect("temp dir");
    let source = dir.path().join("layout.c");
    let binary = dir.path().join("layout");
    std::fs::write(&source, program).expect("write C source");
    let compiler = std::env::var("CC").unwrap_or_else(|_| "cc".to_string());
    let compiled = Command::new(&compiler)
        .arg("-I")
        .arg(&include)
        .arg("-o")
        .arg(&binary)
        .arg(&source)
        .output()
        .unwrap_or_else(|error| panic!("cannot run the C compiler `{compiler}` (Debian: gcc): {error}"));
    assert!(compiled.status.success(), "compiling the header failed: {}", String::from_utf8_lossy(&compiled.stderr));
    let output = Command::new(&binary).output().expect("run layout program");
    let text = String::from_utf8(output.stdout).expect("utf-8");
    let c_values: Vec<(String, usize)> = text
        .lines()
        .map(|line| {
            let (name, value) = line.split_once(' ').expect("name value");
            (name.to_string(), value.parse().expect("number"))
        })
        .collect();
    assert_eq!(c_values[0], ("size".to_string(), size_of::<PacketRecord>()), "struct size");
    for ((field, rust_offset), (c_field, c_offset)) in fields.iter().zip(&c_values[1..]) {
        assert_eq!(field, c_field);
        assert_eq!(rust_offset, c_offset, "offset of `{field}`");
    }
}
