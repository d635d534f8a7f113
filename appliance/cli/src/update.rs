//! `mldefender update sign|apply|status`: A/B updates of the appliance image
//! (docs/image.md, ADR 0009). `sign` runs on the release machine; `apply` and `status`
//! ask the running supervisor, which verifies, writes the slot not running, and blesses
//! a new slot once it is healthy.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use clap::Subcommand;
use mld_ipc::{ControlRequest, UpdateAnswer};
use mld_runtime::slots::{SlotsReport, SIGNED_STATEMENT_PREFIX};
use mld_runtime::Exit;
use sha2::{Digest, Sha256};

#[derive(Debug, Subcommand)]
pub enum UpdateCommand {
    /// Sign a UKI (image/build.sh's OUT/mldefender-V.efi) with the release key PRIVATE:
    /// writes FILE.sig, which covers the file's SHA-256.
    Sign {
        #[arg(long = "key", value_name = "PRIVATE")]
        private_key: PathBuf,
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
    /// Send a signed UKI to the running appliance: it checks the signature (release key
    /// of [image]) and the SHA-256 before writing anything, then writes the slot that is
    /// not running, on trial for image.boot-tries boots.
    ///
    /// Exit status 0 when written, 1 when refused (the reason is printed).
    Apply {
        #[arg(value_name = "FILE")]
        file: PathBuf,
        /// The signature file (default: FILE.sig).
        #[arg(long, value_name = "SIG")]
        signature: Option<PathBuf>,
        /// The SHA-256 the release notes give (hex); the appliance refuses any other.
        #[arg(long, value_name = "HEX")]
        sha256: Option<String>,
        /// Reboot into the update once it is written.
        #[arg(long)]
        reboot: bool,
        #[command(flatten)]
        target: crate::TargetArgs,
    },
    /// The slots: which one runs, each one's version and whether it is blessed, on trial
    /// (tries left) or failed, and a fallback noticed at this boot.
    Status {
        #[command(flatten)]
        supervisor: crate::SupervisorArgs,
    },
}

pub fn run(command: UpdateCommand) -> anyhow::Result<Exit> {
    match command {
        UpdateCommand::Sign { private_key, file } => sign(&private_key, &file),
        UpdateCommand::Apply { file, signature, sha256, reboot, target } => match target.runtime_dir() {
            Ok(dir) => apply(&dir, &file, signature.as_deref(), sha256, reboot),
            Err(exit) => Ok(exit),
        },
        UpdateCommand::Status { supervisor } => match supervisor.runtime_dir() {
            Ok(dir) => status(&dir, supervisor.json),
            Err(exit) => Ok(exit),
        },
    }
}

fn file_sha256(file: &Path) -> anyhow::Result<String> {
    let mut input = std::fs::File::open(file).with_context(|| format!("failed to open `{}`", file.display()))?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let read = input.read(&mut buffer).with_context(|| format!("failed to read `{}`", file.display()))?;
        if read == 0 {
            return Ok(hex::encode(hasher.finalize()));
        }
        hasher.update(&buffer[..read]);
    }
}

fn sign(private_key: &Path, file: &Path) -> anyhow::Result<Exit> {
    let sha256 = file_sha256(file)?;
    let signature = mld_model::signing::sign_bytes(private_key, format!("{SIGNED_STATEMENT_PREFIX}{sha256}").as_bytes())
        .with_context(|| format!("failed to sign `{}`", file.display()))?;
    let path = PathBuf::from(format!("{}.sig", file.display()));
    std::fs::write(&path, format!("{signature}\n")).with_context(|| format!("failed to write `{}`", path.display()))?;
    println!("signed {} (sha256 {sha256}): {}", file.display(), path.display());
    Ok(Exit::Success)
}

fn apply(runtime_dir: &Path, file: &Path, signature: Option<&Path>, sha256: Option<String>, reboot: bool) -> anyhow::Result<Exit> {
    let signature_path = signature.map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from(format!("{}.sig", file.display())));
    let signature = std::fs::read_to_string(&signature_path).with_context(|| format!("failed to read the signature `{}`", signature_path.display()))?;
    let mut input = std::fs::File::open(file).with_context(|| format!("failed to open `{}`", file.display()))?;
    let bytes = input.metadata().with_context(|| format!("failed to read `{}`", file.display()))?.len();
    let path = runtime_dir.join(mld_runtime::supervise::STATUS_SOCKET);
    let mut stream = match UnixStream::connect(&path) {
        Ok(stream) => stream,
        Err(error) => {
            eprintln!("mldefender: error: no supervisor answers on `{}`: {error}", path.display());
            return Ok(Exit::Failure);
        }
    };
    let request = ControlRequest::UpdateApply { bytes, sha256, signature: signature.trim().to_string(), reboot };
    mld_ipc::write_frame(&mut stream, &request).context("failed to ask the supervisor")?;
    eprintln!("sending {} ({} MiB)", file.display(), bytes >> 20);
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let read = input.read(&mut buffer).with_context(|| format!("failed to read `{}`", file.display()))?;
        if read == 0 {
            break;
        }
        // A refusal (too large) closes the stream early: its answer is read below.
        if stream.write_all(&buffer[..read]).is_err() {
            break;
        }
    }
    // Verifying and writing a slot on a FAT partition (in a VM without acceleration) takes a while.
    stream.set_read_timeout(Some(Duration::from_secs(300)))?;
    let answer: UpdateAnswer =
        mld_ipc::read_frame(&mut stream).context("failed to read the supervisor's answer")?.context("the supervisor closed the connection")?;
    match answer.result {
        Ok(done) => {
            println!("{done}");
            if reboot {
                println!("rebooting into it");
            }
            Ok(Exit::Success)
        }
        Err(error) => {
            eprintln!("mldefender: update refused: {error}");
            Ok(Exit::Failure)
        }
    }
}

/// `mldefender stop [--reboot]`.
pub fn stop(runtime_dir: &Path, reboot: bool) -> anyhow::Result<Exit> {
    let answer: UpdateAnswer = match crate::status::ask(runtime_dir, &ControlRequest::Stop { reboot }, Duration::from_secs(10))? {
        Ok(answer) => answer,
        Err(exit) => return Ok(exit),
    };
    match answer.result {
        Ok(done) => {
            println!("{done}");
            Ok(Exit::Success)
        }
        Err(error) => {
            eprintln!("mldefender: error: {error}");
            Ok(Exit::Failure)
        }
    }
}

fn status(runtime_dir: &Path, json: bool) -> anyhow::Result<Exit> {
    let answer: UpdateAnswer = match crate::status::ask(runtime_dir, &ControlRequest::UpdateStatus, Duration::from_secs(30))? {
        Ok(answer) => answer,
        Err(exit) => return Ok(exit),
    };
    let text = match answer.result {
        Ok(text) => text,
        Err(error) => {
            eprintln!("mldefender: error: {error}");
            return Ok(Exit::Failure);
        }
    };
    if json {
        println!("{text}");
        return Ok(Exit::Success);
    }
    let report: SlotsReport = serde_json::from_str(&text).context("the supervisor's slots report does not parse")?;
    let booted = report.booted.map_or("unknown".to_string(), String::from);
    println!("running: slot {booted}");
    for slot in ['a', 'b'] {
        match report.slots.iter().find(|file| file.slot == slot) {
            Some(file) => println!(
                "slot {slot}: {}{}, {} ({}, {} MiB)",
                file.version.as_deref().unwrap_or("unknown version"),
                if Some(slot) == report.booted { " (running)" } else { "" },
                file.state(),
                file.file,
                file.bytes >> 20
            ),
            None => println!("slot {slot}: empty"),
        }
    }
    for note in &report.notes {
        println!("note: {note}");
    }
    Ok(Exit::Success)
}
