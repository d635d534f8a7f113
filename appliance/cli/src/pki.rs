//! `mldefender pki init|issue|status|renew|rotate`: the certificates of `[pki]`
//! (certs/README.md).

use std::path::{Path, PathBuf};

use clap::Subcommand;
use mld_pki::store::{self, Plan, Step};
use mld_pki::Health;
use mld_runtime::Exit;
use time::{Duration, OffsetDateTime};

#[derive(Debug, Subcommand)]
pub enum PkiCommand {
    /// Create a fleet CA in DIR (on an operator machine): ca.pem and ca-key.pem (0600).
    /// Never replaces one.
    Init {
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        /// The CA's common name.
        #[arg(long, default_value = "ml-defender fleet CA")]
        name: String,
        /// Lifetime in days.
        #[arg(long, default_value_t = 3650, value_parser = clap::value_parser!(u32).range(2..=36500))]
        days: u32,
    },
    /// Issue a node's bundle from the CA in --ca-dir into OUT (a new directory): the trust
    /// bundle and the node's etcd client certificate (CN = NODE); with --etcd-san, also an
    /// etcd member's server and peer certificates. Copy OUT's files into the node's pki.dir.
    Issue {
        #[arg(long, value_name = "DIR")]
        ca_dir: PathBuf,
        /// The node's name: its log.node, and its etcd user.
        #[arg(long)]
        node: String,
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// A SAN (DNS name or address) of the node's etcd member certificates; repeat it.
        #[arg(long = "etcd-san", value_name = "SAN")]
        etcd_sans: Vec<String>,
        /// Lifetime of the leaves in days (renewed at two thirds).
        #[arg(long, default_value_t = 90, value_parser = clap::value_parser!(u32).range(1..=3650))]
        days: u32,
    },
    /// Every certificate in pki.dir (or --dir): subject, SANs, issuer, expiry, days left,
    /// SHA-256. Exits 1 when one has expired, is not yet valid or is due for renewal.
    Status {
        #[arg(long, value_name = "FILE", conflicts_with = "dir")]
        config: Option<PathBuf>,
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
    /// Provision pki.dir as the supervisor does at start (create what is missing, renew
    /// what is due); --force issues every leaf again (after a CA rotation).
    Renew {
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        #[arg(long)]
        force: bool,
    },
    /// Start a CA rotation in DIR: a new CA signs from now on, the trust bundle holds the
    /// new one and the old ones until they expire (certs/README.md, "CA rotation").
    Rotate {
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        #[arg(long, default_value = "ml-defender fleet CA")]
        name: String,
        #[arg(long, default_value_t = 3650, value_parser = clap::value_parser!(u32).range(2..=36500))]
        days: u32,
    },
}

pub fn run(command: PkiCommand) -> anyhow::Result<Exit> {
    let now = OffsetDateTime::now_utc();
    let outcome = match command {
        PkiCommand::Init { dir, name, days } => store::init_ca(&dir, &name, Duration::days(days.into()), now).map(|ca| {
            println!("created the CA `{}` in {}: not after {}, SHA-256 {}", ca.common_name, dir.display(), ca.not_after, ca.sha256);
            println!("keep {} on this machine only; issue node bundles with `mldefender pki issue`", dir.join(store::CA_KEY).display());
            Exit::Success
        }),
        PkiCommand::Issue { ca_dir, node, out, etcd_sans, days } => {
            let plan = Plan {
                node: node.clone(),
                local_ca: false,
                ca_name: String::new(),
                ca_lifetime: Duration::ZERO,
                leaf_lifetime: Duration::days(days.into()),
                etcd_member_sans: (!etcd_sans.is_empty()).then_some(etcd_sans),
            };
            store::issue_bundle(&ca_dir, &plan, &out, now).map(|files| {
                for file in files {
                    println!("{}", file.display());
                }
                eprintln!("mldefender: the bundle of `{node}` is in {}: copy its files into the node's pki.dir (pki.ca = \"external\")", out.display());
                Exit::Success
            })
        }
        PkiCommand::Status { config, dir } => {
            let dir = match dir {
                Some(dir) => dir,
                None => match crate::load::config(config.as_deref()) {
                    Ok(config) => config.pki.dir,
                    Err(exit) => return Ok(exit),
                },
            };
            return status(&dir, now);
        }
        PkiCommand::Renew { config, force } => {
            let config = match crate::load::config(config.as_deref()) {
                Ok(config) => config,
                Err(exit) => return Ok(exit),
            };
            mld_runtime::pki::provision(&config, force).map(|outcomes| {
                let mut exit = Exit::Success;
                for outcome in outcomes {
                    let what = match &outcome.step {
                        Step::Kept => "kept".to_string(),
                        Step::Created => "created".to_string(),
                        Step::Renewed(why) => format!("renewed ({why})"),
                        Step::DueWithoutCa(why) => {
                            exit = Exit::Failure;
                            format!("NOT renewed: {why}; the CA's key is not here: install a new bundle")
                        }
                    };
                    println!("{}: {what}", outcome.file.display());
                }
                exit
            })
        }
        PkiCommand::Rotate { dir, name, days } => store::rotate_ca(&dir, &name, Duration::days(days.into()), now).map(|ca| {
            println!("the CA `{}` (SHA-256 {}) signs from now on; the trust bundle keeps the old CAs until they expire", ca.common_name, ca.sha256);
            println!(
                "next: issue new bundles (or `mldefender pki renew --force` on a single box), then drop the old CA from ca.pem when no leaf of it is left"
            );
            Exit::Success
        }),
    };
    Ok(outcome.unwrap_or_else(|error| {
        eprintln!("mldefender: error: {error}");
        Exit::Failure
    }))
}

fn status(dir: &Path, now: OffsetDateTime) -> anyhow::Result<Exit> {
    let certificates = match store::status(dir) {
        Ok(certificates) => certificates,
        Err(error) => {
            eprintln!("mldefender: error: {error}");
            return Ok(Exit::Failure);
        }
    };
    let mut exit = Exit::Success;
    for (path, info) in &certificates {
        let health = info.health(now);
        if health != Health::Valid {
            exit = Exit::Failure;
        }
        println!("{}: {}", path.display(), health.as_str());
        println!("  subject    {}", info.subject);
        if !info.sans.is_empty() {
            println!("  SANs       {}", info.sans.join(", "));
        }
        println!("  issuer     {}{}", info.issuer, if info.is_ca { " (a CA)" } else { "" });
        println!("  not after  {} ({} days left; renew from {})", info.not_after, info.days_left(now), info.renew_at());
        println!("  SHA-256    {}", info.sha256);
    }
    if certificates.is_empty() {
        eprintln!("mldefender: no certificates in {}", dir.display());
        exit = Exit::Failure;
    }
    Ok(exit)
}
