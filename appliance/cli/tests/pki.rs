//! `mldefender pki`: a fleet CA on an operator machine, a node's bundle, status, and the
//! certificates checked by an independent implementation (OpenSSL's `verify`).

use std::path::Path;
use std::process::{Command, Output};

fn mldefender(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mldefender")).args(args).output().expect("run mldefender")
}

fn text(output: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}

fn openssl_verify(ca: &Path, cert: &Path, purpose: &str) -> Output {
    Command::new("openssl").args(["verify", "-purpose", purpose, "-CAfile"]).arg(ca).arg(cert).output().expect("run openssl (scripts/setup installs it)")
}

#[test]
fn an_operator_issues_a_node_bundle_that_openssl_verifies_and_status_reports_it() {
    let work = tempfile::tempdir().expect("dir");
    let ca_dir = work.path().join("fleet-ca");
    let bundle = work.path().join("gw-1");
    let init = mldefender(&["pki", "init", "--dir", ca_dir.to_str().expect("path"), "--name", "test fleet CA"]);
    assert!(init.status.success(), "{}", text(&init));
    let again = mldefender(&["pki", "init", "--dir", ca_dir.to_str().expect("path")]);
    assert_eq!(again.status.code(), Some(1), "a CA is never replaced: {}", text(&again));
    assert!(text(&again).contains("refusing to replace a CA"), "{}", text(&again));

    let issue = mldefender(&[
        "pki",
        "issue",
        "--ca-dir",
        ca_dir.to_str().expect("path"),
        "--node",
        "gw-1",
        "--out",
        bundle.to_str().expect("path"),
        "--etcd-san",
        "etcd-1.lab",
        "--etcd-san",
        "10.77.0.1",
    ]);
    assert!(issue.status.success(), "{}", text(&issue));
    assert!(!bundle.join("ca-key.pem").exists(), "the CA key never leaves the operator machine");
    let ca = bundle.join("ca.pem");
    for (cert, purpose) in [("etcd-client.pem", "sslclient"), ("etcd-server.pem", "sslserver"), ("etcd-peer.pem", "sslserver"), ("etcd-peer.pem", "sslclient")]
    {
        let verified = openssl_verify(&ca, &bundle.join(cert), purpose);
        assert!(verified.status.success(), "openssl verify {cert} ({purpose}): {}", text(&verified));
    }
    // A client certificate is no server certificate.
    let wrong = openssl_verify(&ca, &bundle.join("etcd-client.pem"), "sslserver");
    assert!(!wrong.status.success(), "a client certificate must not pass as a server: {}", text(&wrong));
    // Another CA's trust bundle does not verify it.
    let other = work.path().join("other-ca");
    assert!(mldefender(&["pki", "init", "--dir", other.to_str().expect("path")]).status.success());
    let foreign = openssl_verify(&other.join("ca.pem"), &bundle.join("etcd-client.pem"), "sslclient");
    assert!(!foreign.status.success(), "{}", text(&foreign));

    let status = mldefender(&["pki", "status", "--dir", bundle.to_str().expect("path")]);
    assert!(status.status.success(), "{}", text(&status));
    let report = text(&status);
    for expected in ["CN=gw-1", "etcd-1.lab, 10.77.0.1", "CN=test fleet CA", "days left", "SHA-256", "valid"] {
        assert!(report.contains(expected), "status lacks `{expected}`:\n{report}");
    }

    // A damaged certificate is an error naming the file, exit 1.
    std::fs::write(bundle.join("etcd-server.pem"), "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n").expect("write");
    let damaged = mldefender(&["pki", "status", "--dir", bundle.to_str().expect("path")]);
    assert_eq!(damaged.status.code(), Some(1), "{}", text(&damaged));
    assert!(text(&damaged).contains("etcd-server.pem"), "{}", text(&damaged));
}

#[test]
fn a_single_box_provisions_from_its_configuration_and_keeps_what_is_valid() {
    let work = tempfile::tempdir().expect("dir");
    let dir = work.path().join("pki");
    let config = work.path().join("mldefender.toml");
    std::fs::write(&config, format!("[log]\nnode = \"box-1\"\n[pki]\nenabled = true\ndir = \"{}\"\n", dir.display())).expect("config");
    let first = mldefender(&["pki", "renew", "--config", config.to_str().expect("path")]);
    assert!(first.status.success(), "{}", text(&first));
    assert_eq!(text(&first).matches(": created").count(), 3, "CA key, trust bundle, client leaf: {}", text(&first));
    let second = mldefender(&["pki", "renew", "--config", config.to_str().expect("path")]);
    assert!(second.status.success(), "{}", text(&second));
    assert_eq!(text(&second).matches(": kept").count(), 2, "{}", text(&second));
    assert!(!text(&second).contains("created"), "{}", text(&second));
    let forced = mldefender(&["pki", "renew", "--force", "--config", config.to_str().expect("path")]);
    assert!(text(&forced).contains("renewed (renewal forced)"), "{}", text(&forced));
    let verified = openssl_verify(&dir.join("ca.pem"), &dir.join("etcd-client.pem"), "sslclient");
    assert!(verified.status.success(), "{}", text(&verified));
    let status = mldefender(&["pki", "status", "--config", config.to_str().expect("path")]);
    assert!(status.status.success() && text(&status).contains("CN=box-1"), "{}", text(&status));
    // An external CA without a bundle: the error says what to run.
    std::fs::write(&config, format!("[log]\nnode = \"box-2\"\n[pki]\nenabled = true\nca = \"external\"\ndir = \"{}\"\n", work.path().join("empty").display()))
        .expect("config");
    let external = mldefender(&["pki", "renew", "--config", config.to_str().expect("path")]);
    assert_eq!(external.status.code(), Some(1));
    assert!(text(&external).contains("mldefender pki issue --node box-2"), "{}", text(&external));
}
