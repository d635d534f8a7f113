//! The map contract: `struct mld_lpm_key`, `struct mld_deny_value` and the counter and
//! reason constants in `ebpf/include/mld_shared.h` must agree with their Rust mirrors.

use std::mem::{offset_of, size_of};
use std::path::PathBuf;
use std::process::Command;

use mld_capture::maps::{counter, source_check, source_verdict, DenyValue, GuardKey, GuardValue, IfaceValue, SourceKeyData};
use mld_types::DenyReason;

#[test]
fn map_layouts_and_constants_match_the_c_header() {
    let include = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../ebpf/include");
    let rust: Vec<(&str, u64)> = vec![
        ("sizeof_lpm_key", size_of::<aya::maps::lpm_trie::Key<[u8; 16]>>() as u64),
        ("sizeof_deny_value", size_of::<DenyValue>() as u64),
        ("offsetof_deny_expires", offset_of!(DenyValue, expires_ns) as u64),
        ("offsetof_deny_reason", offset_of!(DenyValue, reason) as u64),
        ("MLD_CTR_PASSED", u64::from(counter::PASSED)),
        ("MLD_CTR_ALLOWED", u64::from(counter::ALLOWED)),
        ("MLD_CTR_DROPPED", u64::from(counter::DROPPED)),
        ("MLD_CTR_MALFORMED", u64::from(counter::MALFORMED)),
        ("MLD_CTR_RING_FULL", u64::from(counter::RING_FULL)),
        ("MLD_CTR_NOT_IP", u64::from(counter::NOT_IP)),
        ("MLD_CTR_EXPIRED", u64::from(counter::EXPIRED)),
        ("MLD_CTR_SPOOFED", u64::from(counter::SPOOFED)),
        ("sizeof_iface_value", size_of::<IfaceValue>() as u64),
        ("offsetof_iface_source_check", offset_of!(IfaceValue, source_check) as u64),
        ("sizeof_src_key", size_of::<aya::maps::lpm_trie::Key<SourceKeyData>>() as u64),
        ("MLD_SRC_CHECK_OFF", u64::from(source_check::OFF)),
        ("MLD_SRC_CHECK_STRICT", u64::from(source_check::STRICT)),
        ("MLD_SRC_CHECK_LOOSE", u64::from(source_check::LOOSE)),
        ("MLD_SRC_PERMIT", u64::from(source_verdict::PERMIT)),
        ("MLD_SRC_FORBID", u64::from(source_verdict::FORBID)),
        ("MLD_CTR_DROP_REASON", u64::from(counter::DROP_REASON)),
        ("MLD_REASONS", u64::from(counter::REASONS)),
        ("MLD_COUNTERS", u64::from(counter::COUNT)),
        ("MLD_CTR_GUARD", u64::from(counter::GUARD)),
        ("MLD_GUARD_ENTRIES", u64::from(mld_capture::maps::GUARD_ENTRIES)),
        ("MLD_GOOD_ENTRIES", u64::from(mld_capture::maps::GOOD_ENTRIES)),
        ("sizeof_guard_key", size_of::<GuardKey>() as u64),
        ("offsetof_guard_key_port", offset_of!(GuardKey, port) as u64),
        ("offsetof_guard_key_protocol", offset_of!(GuardKey, protocol) as u64),
        ("sizeof_guard_value", size_of::<GuardValue>() as u64),
        ("offsetof_guard_interval", offset_of!(GuardValue, interval_ns) as u64),
        ("offsetof_guard_burst", offset_of!(GuardValue, burst_ns) as u64),
        ("offsetof_guard_tat", offset_of!(GuardValue, tat_ns) as u64),
        ("offsetof_guard_expires", offset_of!(GuardValue, expires_ns) as u64),
        ("offsetof_guard_good_within", offset_of!(GuardValue, good_within_ns) as u64),
        ("offsetof_guard_passed", offset_of!(GuardValue, passed) as u64),
        ("offsetof_guard_dropped", offset_of!(GuardValue, dropped) as u64),
        ("offsetof_guard_known_passed", offset_of!(GuardValue, known_passed) as u64),
        ("MLD_REASON_MANUAL", u64::from(DenyReason::Manual.code())),
        ("MLD_REASON_SCAN", u64::from(DenyReason::Scan.code())),
        ("MLD_REASON_FLOOD", u64::from(DenyReason::Flood.code())),
        ("MLD_REASON_BRUTE_FORCE", u64::from(DenyReason::BruteForce.code())),
        ("MLD_REASON_SLOW", u64::from(DenyReason::Slow.code())),
        ("MLD_REASON_OTHER", u64::from(DenyReason::Other.code())),
    ];
    let mut program = String::from("#include <stdio.h>\n#include <stddef.h>\n#include \"mld_shared.h\"\nint main(void) {\n");
    for (name, _) in &rust {
        let expression = match *name {
            "sizeof_lpm_key" => "sizeof(struct mld_lpm_key)".to_string(),
            "sizeof_deny_value" => "sizeof(struct mld_deny_value)".to_string(),
            "offsetof_deny_expires" => "offsetof(struct mld_deny_value, expires_ns)".to_string(),
            "offsetof_deny_reason" => "offsetof(struct mld_deny_value, reason)".to_string(),
            "sizeof_iface_value" => "sizeof(struct mld_iface_value)".to_string(),
            "offsetof_iface_source_check" => "offsetof(struct mld_iface_value, source_check)".to_string(),
            "sizeof_src_key" => "sizeof(struct mld_src_key)".to_string(),
            "sizeof_guard_key" => "sizeof(struct mld_guard_key)".to_string(),
            "sizeof_guard_value" => "sizeof(struct mld_guard_value)".to_string(),
            "offsetof_guard_key_port" => "offsetof(struct mld_guard_key, port)".to_string(),
            "offsetof_guard_key_protocol" => "offsetof(struct mld_guard_key, protocol)".to_string(),
            field if field.starts_with("offsetof_guard_") => {
                let name = match &field["offsetof_guard_".len()..] {
                    "interval" => "interval_ns",
                    "burst" => "burst_ns",
                    "tat" => "tat_ns",
                    "expires" => "expires_ns",
                    "good_within" => "good_within_ns",
                    other => other,
                };
                format!("offsetof(struct mld_guard_value, {name})")
            }
            constant => constant.to_string(),
        };
        program.push_str(&format!("    printf(\"{name} %llu\\n\", (unsigned long long)({expression}));\n"));
    }
    program.push_str("    return 0;\n}\n");
    let dir = tempfile::tempdir().expect("temp dir");
    let source = dir.path().join("contract.c");
    let binary = dir.path().join("contract");
    std::fs::write(&source, program).expect("write C source");
    let compiled = Command::new(std::env::var("CC").unwrap_or_else(|_| "cc".to_string()))
        .arg("-I")
        .arg(&include)
        .arg("-o")
        .arg(&binary)
        .arg(&source)
        .output()
        .expect("run the C compiler (Debian: gcc)");
    assert!(compiled.status.success(), "{}", String::from_utf8_lossy(&compiled.stderr));
    let output = String::from_utf8(Command::new(&binary).output().expect("run").stdout).expect("utf-8");
    let c: Vec<(String, u64)> = output
        .lines()
        .map(|line| {
            let (name, value) = line.split_once(' ').expect("name value");
            (name.to_string(), value.parse().expect("number"))
        })
        .collect();
    for ((name, rust_value), (c_name, c_value)) in rust.iter().zip(&c) {
        assert_eq!(name, c_name);
        assert_eq!(rust_value, c_value, "{name}: Rust {rust_value}, C {c_value}");
    }
}
