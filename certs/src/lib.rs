//! The appliance's certificates (`[pki]`): a CA, the leaves a node needs, and the files
//! that hold them.
//!
//! - [`Ca`] creates or loads a certificate authority and issues leaves with rcgen (ECDSA
//!   P-256). For a single box the CA lives on the box; for a fleet it lives on an operator
//!   machine (`mldefender pki init`), which issues each node a bundle (`pki issue`): the
//!   CA's key never has to be on an appliance.
//! - [`inspect`] reads certificates back (x509-parser): subject, SANs, issuer, validity,
//!   fingerprint; [`Health`] says whether one is valid, due for renewal (two thirds of its
//!   lifetime gone) or expired.
//! - [`store`] is the on-disk layout and [`store::provision`], which is idempotent: what
//!   exists and is valid is kept, what is missing or due is issued (when the CA key is
//!   here), and what cannot be fixed is an error naming the file.
//!
//! Private keys are written 0600 through a fresh file (never an existing one), read
//! through `mld-secret` (owner, mode and type checked on the open fd), and held in
//! [`Zeroizing`] buffers, wiped when dropped. (ring's own key object, while a key signs,
//! is outside our reach.)

pub mod store;

use std::net::IpAddr;

use rcgen::{BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, PublicKeyData};
use sha2::{Digest, Sha256};
use time::{Duration, OffsetDateTime};
use x509_parser::extensions::GeneralName;
use x509_parser::pem::Pem;
use zeroize::Zeroizing;

/// What went wrong, naming the certificate or file and the operation.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("failed to {operation} `{path}`")]
    Io { operation: &'static str, path: std::path::PathBuf, source: std::io::Error },
    #[error(transparent)]
    Secret(#[from] mld_secret::SecretFileError),
    #[error("failed to {operation} {what}: {message}")]
    Certificate { what: String, operation: &'static str, message: String },
    #[error("{0}")]
    Refused(String),
}

impl PkiError {
    fn cert(what: impl Into<String>, operation: &'static str, message: impl ToString) -> PkiError {
        PkiError::Certificate { what: what.into(), operation, message: message.to_string() }
    }
}

/// A certificate and its private key, both PEM. The key is wiped when dropped.
#[derive(Debug)]
pub struct Identity {
    pub cert_pem: String,
    pub key_pem: Zeroizing<String>,
}

/// What a leaf is for: the extended key usages it carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeafKind {
    /// A client of etcd (this node): clientAuth; its CN is the etcd user name.
    Client,
    /// An etcd member's client-facing server: serverAuth (and clientAuth, which etcd's
    /// gateway and health checks use).
    Server,
    /// An etcd member's peer certificate: both, since peers are clients and servers.
    Peer,
}

/// One leaf to issue: its common name, SANs (DNS names or IP addresses) and lifetime.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeafSpec {
    pub kind: LeafKind,
    pub common_name: String,
    pub sans: Vec<String>,
    pub lifetime: Duration,
}

/// A certificate authority that can sign: its certificate and key.
#[derive(Debug)]
pub struct Ca {
    cert_pem: String,
    key_pem: Zeroizing<String>,
}

/// A certificate's validity starts this long before it was issued, so that a peer whose
/// clock is a little behind accepts it.
const BACKDATE: Duration = Duration::minutes(5);

impl Ca {
    /// Creates a self-signed CA named `name`, valid from now for `lifetime`.
    pub fn create(name: &str, lifetime: Duration, now: OffsetDateTime) -> Result<Ca, PkiError> {
        let what = format!("the CA `{name}`");
        let key = KeyPair::generate().map_err(|error| PkiError::cert(&what, "generate the key of", error))?;
        let mut params = CertificateParams::default();
        params.distinguished_name = name_of(name);
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        params.not_before = now - BACKDATE;
        params.not_after = now + lifetime;
        let cert = params.self_signed(&key).map_err(|error| PkiError::cert(&what, "self-sign", error))?;
        Ok(Ca { cert_pem: cert.pem(), key_pem: Zeroizing::new(key.serialize_pem()) })
    }

    /// A CA from its certificate and key (PEM). Refused when the key is not the
    /// certificate's or the certificate is not a CA.
    pub fn from_pem(cert_pem: &str, key_pem: Zeroizing<String>) -> Result<Ca, PkiError> {
        let info =
            inspect(cert_pem, "the CA certificate")?.into_iter().next().ok_or_else(|| PkiError::cert("the CA certificate", "read", "no certificate in it"))?;
        if !info.is_ca {
            return Err(PkiError::Refused(format!("the CA certificate `{}` is not a CA (basic constraints)", info.subject)));
        }
        let key = KeyPair::from_pem(&key_pem).map_err(|error| PkiError::cert("the CA key", "parse", error))?;
        if key.subject_public_key_info() != info.public_key_der {
            return Err(PkiError::Refused(format!("the CA key does not belong to the CA certificate `{}`", info.subject)));
        }
        Ok(Ca { cert_pem: cert_pem.to_string(), key_pem })
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    pub fn key_pem(&self) -> &Zeroizing<String> {
        &self.key_pem
    }

    /// Issues a leaf with a fresh key, valid from now for its lifetime (never past the CA's
    /// own expiry: a leaf cannot outlive its issuer).
    pub fn issue(&self, spec: &LeafSpec, now: OffsetDateTime) -> Result<Identity, PkiError> {
        let what = format!("the certificate `{}`", spec.common_name);
        let ca_key = KeyPair::from_pem(&self.key_pem).map_err(|error| PkiError::cert("the CA key", "parse", error))?;
        let issuer = Issuer::from_ca_cert_pem(&self.cert_pem, ca_key).map_err(|error| PkiError::cert("the CA certificate", "parse", error))?;
        let ca_not_after = inspect(&self.cert_pem, "the CA certificate")?.first().map(|info| info.not_after).unwrap_or(now);
        let key = KeyPair::generate().map_err(|error| PkiError::cert(&what, "generate the key of", error))?;
        let mut params = CertificateParams::new(spec.sans.clone()).map_err(|error| PkiError::cert(&what, "set the SANs of", error))?;
        params.distinguished_name = name_of(&spec.common_name);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = match spec.kind {
            LeafKind::Client => vec![ExtendedKeyUsagePurpose::ClientAuth],
            LeafKind::Server | LeafKind::Peer => vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth],
        };
        params.use_authority_key_identifier_extension = true;
        params.not_before = now - BACKDATE;
        params.not_after = (now + spec.lifetime).min(ca_not_after);
        let cert = params.signed_by(&key, &issuer).map_err(|error| PkiError::cert(&what, "sign", error))?;
        Ok(Identity { cert_pem: cert.pem(), key_pem: Zeroizing::new(key.serialize_pem()) })
    }
}

fn name_of(common_name: &str) -> DistinguishedName {
    let mut name = DistinguishedName::new();
    name.push(DnType::OrganizationName, "ml-defender");
    name.push(DnType::CommonName, common_name);
    name
}

/// One certificate as read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    pub subject: String,
    pub common_name: String,
    pub issuer: String,
    pub sans: Vec<String>,
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
    pub is_ca: bool,
    /// SHA-256 of the DER, lowercase hex.
    pub sha256: String,
    /// The subject's public key (SubjectPublicKeyInfo, DER).
    pub public_key_der: Vec<u8>,
    der: Vec<u8>,
}

/// How a certificate stands at a given time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    Valid,
    /// Two thirds of its lifetime are gone: renew it now.
    RenewalDue,
    Expired,
    NotYetValid,
}

impl Health {
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Valid => "valid",
            Health::RenewalDue => "renewal due",
            Health::Expired => "expired",
            Health::NotYetValid => "not yet valid",
        }
    }
}

impl CertInfo {
    /// When two thirds of the lifetime are gone.
    pub fn renew_at(&self) -> OffsetDateTime {
        self.not_before + (self.not_after - self.not_before) * 2 / 3
    }

    pub fn health(&self, now: OffsetDateTime) -> Health {
        if now >= self.not_after {
            Health::Expired
        } else if now < self.not_before {
            Health::NotYetValid
        } else if now >= self.renew_at() {
            Health::RenewalDue
        } else {
            Health::Valid
        }
    }

    /// Whole days until it expires (negative once it has).
    pub fn days_left(&self, now: OffsetDateTime) -> i64 {
        (self.not_after - now).whole_days()
    }

    /// Whether `issuer` signed this certificate (names and signature).
    pub fn signed_by(&self, issuer: &CertInfo) -> bool {
        if self.issuer != issuer.subject {
            return false;
        }
        let (Ok((_, cert)), Ok((_, ca))) = (x509_parser::parse_x509_certificate(&self.der), x509_parser::parse_x509_certificate(&issuer.der)) else {
            return false;
        };
        cert.verify_signature(Some(ca.public_key())).is_ok()
    }
}

/// Reads every certificate in a PEM text (a trust bundle holds several). `what` names the
/// text in errors. Text without any certificate is an error.
pub fn inspect(pem: &str, what: &str) -> Result<Vec<CertInfo>, PkiError> {
    let mut infos = Vec::new();
    for block in Pem::iter_from_buffer(pem.as_bytes()) {
        let block = block.map_err(|error| PkiError::cert(what, "read the PEM of", error))?;
        if block.label != "CERTIFICATE" {
            continue;
        }
        let cert = block.parse_x509().map_err(|error| PkiError::cert(what, "parse", error))?;
        let sans = match cert.subject_alternative_name() {
            Ok(Some(extension)) => extension.value.general_names.iter().filter_map(describe_name).collect(),
            Ok(None) => Vec::new(),
            Err(error) => return Err(PkiError::cert(what, "read the SANs of", error)),
        };
        let common_name = cert.subject().iter_common_name().next().and_then(|name| name.as_str().ok()).unwrap_or_default().to_string();
        let time = |stamp: i64| OffsetDateTime::from_unix_timestamp(stamp).map_err(|error| PkiError::cert(what, "read the validity of", error));
        infos.push(CertInfo {
            subject: cert.subject().to_string(),
            common_name,
            issuer: cert.issuer().to_string(),
            sans,
            not_before: time(cert.validity().not_before.timestamp())?,
            not_after: time(cert.validity().not_after.timestamp())?,
            is_ca: cert.is_ca(),
            sha256: hex::encode(Sha256::digest(&block.contents)),
            public_key_der: cert.public_key().raw.to_vec(),
            der: block.contents.clone(),
        });
    }
    if infos.is_empty() {
        return Err(PkiError::cert(what, "read", "it holds no certificate"));
    }
    Ok(infos)
}

fn describe_name(name: &GeneralName<'_>) -> Option<String> {
    match name {
        GeneralName::DNSName(dns) => Some((*dns).to_string()),
        GeneralName::IPAddress(bytes) => match bytes.len() {
            4 => Some(IpAddr::from(<[u8; 4]>::try_from(*bytes).ok()?).to_string()),
            16 => Some(IpAddr::from(<[u8; 16]>::try_from(*bytes).ok()?).to_string()),
            _ => None,
        },
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_800_000_000).expect("time")
    }

    fn client(name: &str) -> LeafSpec {
        LeafSpec { kind: LeafKind::Client, common_name: name.to_string(), sans: Vec::new(), lifetime: Duration::days(90) }
    }

    #[test]
    fn a_leaf_is_signed_by_its_ca_and_by_no_other() {
        let ca = Ca::create("fleet CA", Duration::days(3650), now()).expect("ca");
        let other = Ca::create("fleet CA", Duration::days(3650), now()).expect("other ca");
        let server = LeafSpec {
            kind: LeafKind::Server,
            common_name: "etcd-1".to_string(),
            sans: vec!["localhost".to_string(), "10.77.0.1".to_string()],
            lifetime: Duration::days(90),
        };
        let leaf = ca.issue(&server, now()).expect("issue");
        let info = &inspect(&leaf.cert_pem, "leaf").expect("inspect")[0];
        let ca_info = &inspect(ca.cert_pem(), "ca").expect("inspect ca")[0];
        let other_info = &inspect(other.cert_pem(), "other").expect("inspect other")[0];
        assert_eq!(info.common_name, "etcd-1");
        assert_eq!(info.sans, vec!["localhost".to_string(), "10.77.0.1".to_string()]);
        assert!(ca_info.is_ca && !info.is_ca);
        assert!(info.signed_by(ca_info), "signed by its CA");
        assert!(!info.signed_by(other_info), "a CA with the same name but another key did not sign it");
        assert_eq!(info.sha256.len(), 64);
    }

    #[test]
    fn health_follows_two_thirds_of_the_lifetime_and_a_leaf_never_outlives_its_ca() {
        let ca = Ca::create("short CA", Duration::days(30), now()).expect("ca");
        let leaf = ca.issue(&client("node-a"), now()).expect("issue");
        let info = &inspect(&leaf.cert_pem, "leaf").expect("inspect")[0];
        let ca_info = &inspect(ca.cert_pem(), "ca").expect("inspect ca")[0];
        assert_eq!(info.not_after, ca_info.not_after, "capped at the CA's expiry, not 90 days");
        assert_eq!(info.health(now()), Health::Valid);
        assert_eq!(info.health(info.renew_at() - Duration::seconds(1)), Health::Valid);
        assert_eq!(info.health(info.renew_at()), Health::RenewalDue);
        assert_eq!(info.health(info.not_after), Health::Expired);
        assert_eq!(info.health(now() - Duration::hours(1)), Health::NotYetValid);
        assert_eq!(info.days_left(now()), 30);
        assert_eq!(info.days_left(now() + Duration::days(31)), -1, "negative once expired");
    }

    #[test]
    fn a_ca_key_that_is_not_the_certificates_is_refused() {
        let ca = Ca::create("a", Duration::days(10), now()).expect("ca");
        let other = Ca::create("b", Duration::days(10), now()).expect("ca");
        let error = Ca::from_pem(ca.cert_pem(), other.key_pem().clone()).expect_err("mismatched key");
        assert!(error.to_string().contains("does not belong"), "{error}");
        let leaf = ca.issue(&client("node-a"), now()).expect("issue");
        let error = Ca::from_pem(&leaf.cert_pem, leaf.key_pem).expect_err("a leaf is no CA");
        assert!(error.to_string().contains("is not a CA"), "{error}");
        Ca::from_pem(ca.cert_pem(), ca.key_pem().clone()).expect("its own key");
    }

    #[test]
    fn text_without_a_certificate_is_an_error_naming_it() {
        let error = inspect("not a certificate", "the trust bundle").expect_err("nothing");
        assert!(error.to_string().contains("the trust bundle") && error.to_string().contains("no certificate"), "{error}");
    }
}
