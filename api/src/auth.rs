//! Who is calling: JWT verification (HS256, RS256, ES256; keys from a secret, a PEM
//! public key or a JWKS file), the roles, and issuing tokens for development.
//!
//! A token's claims: `sub` (who), `role` (`ops`, `utility`, `consumer`, `service`),
//! `user` (the account a consumer is, required for consumers), `exp`, `nbf`, `iat`,
//! `iss` and `aud`. `exp`, `iss`, `aud` and `sub` are required; `nbf` is checked when
//! present. Only the algorithms of the configured keys are accepted, each key only with
//! its own algorithm: `alg: none` and HS/RS confusion (an HS256 token "signed" with the
//! RSA public key) are refused before any signature is checked.
//!
//! Invariant: a token is never logged or echoed back: errors name the reason only.

use std::path::Path;
use std::sync::Arc;

use base64::Engine as _;
use gridpulse_domain::UserId;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

/// What a caller may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Operations: reads everything, acts on alerts, reads the audit log.
    Ops,
    /// The utility's back office: manages meters, users, tariffs; bulk ingest.
    Utility,
    /// A customer: their own user and their own meters only.
    Consumer,
    /// A machine that ingests readings (a bridge, a head-end system).
    Service,
}

impl Role {
    /// Every role.
    pub const ALL: [Role; 4] = [Role::Ops, Role::Utility, Role::Consumer, Role::Service];

    /// The claim value.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Ops => "ops",
            Role::Utility => "utility",
            Role::Consumer => "consumer",
            Role::Service => "service",
        }
    }

    /// Parses a claim value.
    pub fn parse(text: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|role| role.as_str() == text)
    }
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The token's subject (who did it, in the audit log).
    pub subject: Arc<str>,
    /// What it may do.
    pub role: Role,
    /// The account a consumer acts for (required for consumers; informative otherwise).
    pub user: Option<UserId>,
    /// Expiry, Unix seconds (`None` only for the insecure development principal).
    pub expires_at: Option<u64>,
}

impl Principal {
    /// The caller of a server started with `--insecure-dev`: ops and utility at once.
    pub fn insecure_dev() -> Principal {
        Principal {
            subject: Arc::from("insecure-dev"),
            role: Role::Ops,
            user: None,
            expires_at: None,
        }
    }

    /// Whether this caller sees only one user's data: the user it is scoped to.
    pub fn tenant(&self) -> Option<UserId> {
        match self.role {
            Role::Consumer => self.user,
            _ => None,
        }
    }
}

/// The claims of a gridpulse token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Subject.
    pub sub: String,
    /// Role (`ops`, `utility`, `consumer`, `service`).
    pub role: String,
    /// The user a consumer is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Expiry, Unix seconds.
    pub exp: u64,
    /// Not before, Unix seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    /// Issued at, Unix seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
    /// Issuer.
    pub iss: String,
    /// Audience.
    pub aud: String,
}

/// Why a request is not authenticated (the `reason` label of the auth failure metric
/// and the error code of the 401).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No token at all.
    #[error("authentication required: send `Authorization: Bearer <token>`")]
    Missing,
    /// Not a JWT, or an `Authorization` header that is not a bearer token.
    #[error("the token is not a well-formed JWT")]
    Malformed,
    /// `alg` is none, unknown, or not the algorithm of any configured key.
    #[error("the token's algorithm is not accepted")]
    AlgorithmNotAllowed,
    /// No configured key with the token's `kid`.
    #[error("the token's key id is unknown")]
    UnknownKey,
    /// The signature does not verify.
    #[error("the token's signature is invalid")]
    BadSignature,
    /// Past `exp`.
    #[error("the token has expired")]
    Expired,
    /// Before `nbf`.
    #[error("the token is not valid yet")]
    NotYetValid,
    /// Wrong `iss`.
    #[error("the token's issuer is not accepted")]
    WrongIssuer,
    /// Wrong `aud`.
    #[error("the token is meant for another audience")]
    WrongAudience,
    /// A required claim is missing or has a bad value (unknown role, consumer without
    /// `user`).
    #[error("the token's claims are incomplete or invalid")]
    BadClaims,
    /// The token is valid but its role may not use this (e.g. a `service` token on the
    /// websocket).
    #[error("the token's role may not do this")]
    RoleNotAllowed,
}

impl AuthError {
    /// Stable code (error body, metric label).
    pub fn code(self) -> &'static str {
        match self {
            AuthError::Missing => "missing_token",
            AuthError::Malformed => "malformed_token",
            AuthError::AlgorithmNotAllowed => "algorithm_not_allowed",
            AuthError::UnknownKey => "unknown_key",
            AuthError::BadSignature => "bad_signature",
            AuthError::Expired => "expired",
            AuthError::NotYetValid => "not_yet_valid",
            AuthError::WrongIssuer => "wrong_issuer",
            AuthError::WrongAudience => "wrong_audience",
            AuthError::BadClaims => "bad_claims",
            AuthError::RoleNotAllowed => "forbidden_role",
        }
    }
}

/// One key tokens may be signed with.
#[derive(Clone)]
struct VerifyKey {
    kid: Option<String>,
    algorithm: Algorithm,
    key: DecodingKey,
}

impl std::fmt::Debug for VerifyKey {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("VerifyKey")
            .field("kid", &self.kid)
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

/// Verifies tokens.
#[derive(Debug, Clone)]
pub struct Verifier {
    keys: Vec<VerifyKey>,
    issuer: String,
    audience: String,
    /// Clock skew tolerated on `exp` and `nbf`, seconds.
    leeway_s: u64,
}

/// How the server authenticates callers.
#[derive(Debug, Clone)]
pub enum Auth {
    /// Every request is the [`Principal::insecure_dev`] caller: development only,
    /// announced loudly at start.
    InsecureDev,
    /// Bearer tokens, verified.
    Tokens(Arc<Verifier>),
}

/// Problems with the key configuration (at start, never per request).
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// A file could not be read.
    #[error("{path}: {error}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        error: std::io::Error,
    },
    /// A key could not be used.
    #[error("{what}: {reason}")]
    Invalid {
        /// Which key.
        what: String,
        /// Why.
        reason: String,
    },
}

fn read_file(path: &Path) -> Result<Vec<u8>, KeyError> {
    std::fs::read(path).map_err(|error| KeyError::Read {
        path: path.display().to_string(),
        error,
    })
}

fn invalid(what: &Path, reason: impl std::fmt::Display) -> KeyError {
    KeyError::Invalid {
        what: what.display().to_string(),
        reason: reason.to_string(),
    }
}

/// Default `iss` and `aud` of gridpulse tokens.
pub const DEFAULT_ISSUER: &str = "gridpulse";
/// Default audience.
pub const DEFAULT_AUDIENCE: &str = "gridpulse";

impl Verifier {
    /// A verifier without keys for tokens from `issuer` meant for `audience`.
    pub fn new(issuer: impl Into<String>, audience: impl Into<String>) -> Verifier {
        Verifier {
            keys: Vec::new(),
            issuer: issuer.into(),
            audience: audience.into(),
            leeway_s: 5,
        }
    }

    /// Whether any key is configured.
    pub fn has_keys(&self) -> bool {
        !self.keys.is_empty()
    }

    /// Accepts HS256 tokens signed with `secret`.
    pub fn with_hs256_secret(mut self, secret: &[u8]) -> Result<Verifier, KeyError> {
        if secret.len() < 16 {
            return Err(KeyError::Invalid {
                what: "HS256 secret".into(),
                reason: "must be at least 16 bytes".into(),
            });
        }
        let key = DecodingKey::from_secret(secret).map_err(|error| KeyError::Invalid {
            what: "HS256 secret".into(),
            reason: error.to_string(),
        })?;
        self.keys.push(VerifyKey {
            kid: None,
            algorithm: Algorithm::HS256,
            key,
        });
        Ok(self)
    }

    /// Accepts RS256 or ES256 (P-256) tokens verified by the PEM public key in `path`
    /// (the algorithm follows the key type).
    pub fn with_public_key_file(mut self, path: &Path) -> Result<Verifier, KeyError> {
        let pem = read_file(path)?;
        let (algorithm, key) = if let Ok(key) = DecodingKey::from_rsa_pem(&pem) {
            (Algorithm::RS256, key)
        } else if let Ok(key) = DecodingKey::from_ec_pem(&pem) {
            (Algorithm::ES256, key)
        } else {
            return Err(invalid(
                path,
                "not a PEM RSA or EC (P-256) public key (`-----BEGIN PUBLIC KEY-----`)",
            ));
        };
        self.keys.push(VerifyKey {
            kid: None,
            algorithm,
            key,
        });
        Ok(self)
    }

    /// Accepts tokens signed by any RSA or P-256 key of the JWKS file in `path`, matched
    /// by `kid` when the token names one.
    pub fn with_jwks_file(mut self, path: &Path) -> Result<Verifier, KeyError> {
        let text = read_file(path)?;
        let set: JwkSet =
            serde_json::from_slice(&text).map_err(|error| invalid(path, error.to_string()))?;
        if set.keys.is_empty() {
            return Err(invalid(path, "the key set has no keys"));
        }
        for (index, jwk) in set.keys.iter().enumerate() {
            let algorithm = match &jwk.algorithm {
                AlgorithmParameters::RSA(_) => Algorithm::RS256,
                AlgorithmParameters::EllipticCurve(params)
                    if params.curve == EllipticCurve::P256 =>
                {
                    Algorithm::ES256
                }
                _ => {
                    return Err(invalid(
                        path,
                        format!(
                            "keys[{index}]: only RSA (RS256) and EC P-256 (ES256) keys are supported"
                        ),
                    ));
                }
            };
            let key = DecodingKey::from_jwk(jwk)
                .map_err(|error| invalid(path, format!("keys[{index}]: {error}")))?;
            self.keys.push(VerifyKey {
                kid: jwk.common.key_id.clone(),
                algorithm,
                key,
            });
        }
        Ok(self)
    }

    /// Verifies a token and returns its caller.
    pub fn verify(&self, token: &str) -> Result<Principal, AuthError> {
        let header = match jsonwebtoken::decode_header(token) {
            Ok(header) => header,
            // `alg: none` (or any algorithm the library does not know) fails to parse.
            Err(_) if header_names_an_algorithm(token) => {
                return Err(AuthError::AlgorithmNotAllowed);
            }
            Err(_) => return Err(AuthError::Malformed),
        };
        let mut candidates = self
            .keys
            .iter()
            .filter(|key| key.algorithm == header.alg)
            .peekable();
        if candidates.peek().is_none() {
            return Err(AuthError::AlgorithmNotAllowed);
        }
        let mut candidates: Vec<&VerifyKey> = match &header.kid {
            Some(kid) => candidates
                .filter(|key| key.kid.as_deref().is_none_or(|own| own == kid))
                .collect(),
            None => candidates.collect(),
        };
        if candidates.is_empty() {
            return Err(AuthError::UnknownKey);
        }
        // Keys naming the token's kid first.
        candidates.sort_by_key(|key| key.kid.is_none());
        let mut validation = Validation::new(header.alg);
        validation.leeway = self.leeway_s;
        validation.validate_nbf = true;
        validation.set_issuer(&[self.issuer.as_str()]);
        validation.set_audience(&[self.audience.as_str()]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        let mut last = AuthError::BadSignature;
        for key in candidates {
            match jsonwebtoken::decode::<Claims>(token, &key.key, &validation) {
                Ok(data) => return principal_of(data.claims),
                Err(error) => {
                    last = match error.kind() {
                        ErrorKind::InvalidSignature => AuthError::BadSignature,
                        ErrorKind::ExpiredSignature => return Err(AuthError::Expired),
                        ErrorKind::ImmatureSignature => return Err(AuthError::NotYetValid),
                        ErrorKind::InvalidIssuer => return Err(AuthError::WrongIssuer),
                        ErrorKind::InvalidAudience => return Err(AuthError::WrongAudience),
                        ErrorKind::InvalidAlgorithm => return Err(AuthError::AlgorithmNotAllowed),
                        ErrorKind::MissingRequiredClaim(_) | ErrorKind::Json(_) => {
                            return Err(AuthError::BadClaims);
                        }
                        _ => AuthError::Malformed,
                    };
                }
            }
        }
        Err(last)
    }
}

/// Whether the token's header is JSON with an `alg` (so a parse failure means an
/// algorithm we do not accept, e.g. `none`, rather than garbage).
fn header_names_an_algorithm(token: &str) -> bool {
    let Some(header) = token.split('.').next() else {
        return false;
    };
    let Ok(bytes) =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(header.trim_end_matches('='))
    else {
        return false;
    };
    serde_json::from_slice::<serde_json::Value>(&bytes)
        .ok()
        .and_then(|value| value.get("alg").cloned())
        .is_some()
}

fn principal_of(claims: Claims) -> Result<Principal, AuthError> {
    let role = Role::parse(&claims.role).ok_or(AuthError::BadClaims)?;
    if claims.sub.is_empty() || claims.sub.len() > 200 {
        return Err(AuthError::BadClaims);
    }
    let user = claims
        .user
        .as_deref()
        .map(UserId::new)
        .transpose()
        .map_err(|_| AuthError::BadClaims)?;
    if role == Role::Consumer && user.is_none() {
        return Err(AuthError::BadClaims);
    }
    Ok(Principal {
        subject: Arc::from(claims.sub.as_str()),
        role,
        user,
        expires_at: Some(claims.exp),
    })
}

impl Auth {
    /// The caller of a request whose `Authorization` header is `header` (or `None`).
    pub fn authenticate_header(&self, header: Option<&[u8]>) -> Result<Principal, AuthError> {
        match self {
            Auth::InsecureDev => Ok(Principal::insecure_dev()),
            Auth::Tokens(verifier) => {
                let header = header.ok_or(AuthError::Missing)?;
                let text = std::str::from_utf8(header).map_err(|_| AuthError::Malformed)?;
                let token = text
                    .strip_prefix("Bearer ")
                    .or_else(|| text.strip_prefix("bearer "))
                    .ok_or(AuthError::Malformed)?;
                verifier.verify(token.trim())
            }
        }
    }

    /// The caller presenting `token` (e.g. in a websocket's first message).
    pub fn authenticate_token(&self, token: &str) -> Result<Principal, AuthError> {
        match self {
            Auth::InsecureDev => Ok(Principal::insecure_dev()),
            Auth::Tokens(verifier) => verifier.verify(token.trim()),
        }
    }

    /// Whether callers need no token.
    pub fn is_insecure(&self) -> bool {
        matches!(self, Auth::InsecureDev)
    }
}

/// How to sign a token (`gridpulse token`).
#[derive(Debug, Clone)]
pub enum SigningKey {
    /// HS256 with a shared secret.
    Hs256(Vec<u8>),
    /// RS256 with a PEM private key.
    Rs256Pem(Vec<u8>),
    /// ES256 with a PEM (PKCS#8) P-256 private key.
    Es256Pem(Vec<u8>),
}

/// Signs `claims` (with `kid` in the header when given).
pub fn issue(
    claims: &Claims,
    key: &SigningKey,
    kid: Option<&str>,
) -> Result<String, jsonwebtoken::errors::Error> {
    let (algorithm, key) = match key {
        SigningKey::Hs256(secret) => (Algorithm::HS256, EncodingKey::from_secret(secret)?),
        SigningKey::Rs256Pem(pem) => (Algorithm::RS256, EncodingKey::from_rsa_pem(pem)?),
        SigningKey::Es256Pem(pem) => (Algorithm::ES256, EncodingKey::from_ec_pem(pem)?),
    };
    let mut header = Header::new(algorithm);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, claims, &key)
}

/// The development secret under a data directory: created (32 random bytes, owner-only)
/// on first use, so `gridpulse run` and `gridpulse token --data-dir` agree.
pub fn dev_secret(data_dir: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read as _;
    let path = data_dir.join("dev-jwt-secret");
    match std::fs::read(&path) {
        Ok(secret) if secret.len() >= 32 => return Ok(secret),
        Ok(_) | Err(_) => {}
    }
    std::fs::create_dir_all(data_dir)?;
    let mut secret = vec![0_u8; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut secret)?;
    let hex: String = secret.iter().map(|byte| format!("{byte:02x}")).collect();
    let temporary = data_dir.join("dev-jwt-secret.tmp");
    {
        use std::io::Write as _;
        #[cfg(unix)]
        let mut file = {
            use std::os::unix::fs::OpenOptionsExt as _;
            std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&temporary)?
        };
        #[cfg(not(unix))]
        let mut file = std::fs::File::create(&temporary)?;
        file.write_all(hex.as_bytes())?;
        file.sync_all()?;
    }
    std::fs::rename(&temporary, &path)?;
    Ok(hex.into_bytes())
}

/// Now, Unix seconds.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs())
}

/// Parses a duration like `90s`, `15m`, `12h`, `30d` (a bare number is seconds).
pub fn parse_ttl(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let (number, unit) = match text.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((index, _)) => text.split_at(index),
        None => (text, "s"),
    };
    let number: u64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a duration like 90s, 15m, 12h or 30d"))?;
    let unit_s = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("`{text}`: the unit must be s, m, h or d")),
    };
    number
        .checked_mul(unit_s)
        .filter(|seconds| *seconds > 0)
        .ok_or_else(|| format!("`{text}` must be a positive duration"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    const SECRET: &[u8] = b"a-test-secret-of-32-bytes-length";

    fn claims(role: &str, user: Option<&str>) -> Claims {
        let now = unix_now();
        Claims {
            sub: "alice".into(),
            role: role.into(),
            user: user.map(str::to_owned),
            exp: now + 600,
            nbf: None,
            iat: Some(now),
            iss: DEFAULT_ISSUER.into(),
            aud: DEFAULT_AUDIENCE.into(),
        }
    }

    #[test]
    fn hs256_tokens_round_trip_and_bad_ones_say_why() {
        let verifier = Verifier::new(DEFAULT_ISSUER, DEFAULT_AUDIENCE)
            .with_hs256_secret(SECRET)
            .unwrap();
        let key = SigningKey::Hs256(SECRET.to_vec());
        let token = issue(&claims("consumer", Some("u-1")), &key, None).unwrap();
        let principal = verifier.verify(&token).unwrap();
        assert_eq!(principal.role, Role::Consumer);
        assert_eq!(principal.user.unwrap().as_str(), "u-1");
        assert_eq!(principal.tenant(), principal.user);

        let other = issue(
            &claims("ops", None),
            &SigningKey::Hs256(b"another-secret-of-16".to_vec()),
            None,
        )
        .unwrap();
        assert_eq!(verifier.verify(&other), Err(AuthError::BadSignature));
        let no_user = issue(&claims("consumer", None), &key, None).unwrap();
        assert_eq!(verifier.verify(&no_user), Err(AuthError::BadClaims));
        let bad_role = issue(&claims("root", None), &key, None).unwrap();
        assert_eq!(verifier.verify(&bad_role), Err(AuthError::BadClaims));
        let mut expired = claims("ops", None);
        expired.exp = unix_now() - 3600;
        assert_eq!(
            verifier.verify(&issue(&expired, &key, None).unwrap()),
            Err(AuthError::Expired)
        );
        let mut early = claims("ops", None);
        early.nbf = Some(unix_now() + 3600);
        assert_eq!(
            verifier.verify(&issue(&early, &key, None).unwrap()),
            Err(AuthError::NotYetValid)
        );
        let mut elsewhere = claims("ops", None);
        elsewhere.aud = "billing".into();
        assert_eq!(
            verifier.verify(&issue(&elsewhere, &key, None).unwrap()),
            Err(AuthError::WrongAudience)
        );
        let mut foreign = claims("ops", None);
        foreign.iss = "evil".into();
        assert_eq!(
            verifier.verify(&issue(&foreign, &key, None).unwrap()),
            Err(AuthError::WrongIssuer)
        );
        assert_eq!(verifier.verify("not-a-token"), Err(AuthError::Malformed));
    }

    #[test]
    fn alg_none_is_refused_as_an_algorithm() {
        let verifier = Verifier::new(DEFAULT_ISSUER, DEFAULT_AUDIENCE)
            .with_hs256_secret(SECRET)
            .unwrap();
        let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let header = engine.encode(br#"{"alg":"none","typ":"JWT"}"#);
        let body = engine.encode(serde_json::to_vec(&claims("ops", None)).unwrap());
        assert_eq!(
            verifier.verify(&format!("{header}.{body}.")),
            Err(AuthError::AlgorithmNotAllowed)
        );
    }

    #[test]
    fn ttls_parse_with_units() {
        assert_eq!(parse_ttl("90"), Ok(90));
        assert_eq!(parse_ttl("15m"), Ok(900));
        assert_eq!(parse_ttl("12h"), Ok(43_200));
        assert_eq!(parse_ttl("30d"), Ok(2_592_000));
        assert!(parse_ttl("0s").is_err());
        assert!(parse_ttl("1w").is_err());
        assert!(parse_ttl("soon").is_err());
    }
}
