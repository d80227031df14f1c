//! The audit log: every write to the API by an authenticated caller, who did it, with
//! the status it got (append-only, in the store; `GET /api/audit` reads it).
//!
//! Architecture invariant: entries are appended after the handler answered and before
//! the response leaves, so a write a client saw succeed is in the log; an append that
//! fails is counted (`gridpulse_api_audit_failures_total`) and logged, never turned into
//! a failure of the write that already happened. Tokens and bodies are never recorded.

use std::sync::LazyLock;
use std::sync::atomic::{AtomicU64, Ordering};

use actix_web::http::Method;
use gridpulse_store::AuditEntry;

use crate::auth::Principal;
use crate::state::AppState;

/// Tells apart the entries of one millisecond, and of API replicas writing into one
/// store: a random high half per process, a counter below it.
static SEQ: LazyLock<AtomicU64> = LazyLock::new(|| {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    AtomicU64::new(hasher.finish() & 0xffff_ffff_0000_0000)
});

fn next_seq() -> u64 {
    SEQ.fetch_add(1, Ordering::Relaxed)
}

/// The entry of one answered write (path truncated to what the store keeps).
pub fn entry(
    at_ms: i64,
    principal: &Principal,
    method: &Method,
    path: &str,
    status: u16,
) -> AuditEntry {
    let mut path = path.to_owned();
    if path.len() > 4096 {
        let mut end = 4096;
        while !path.is_char_boundary(end) {
            end -= 1;
        }
        path.truncate(end);
    }
    let mut subject = principal.subject.to_string();
    if subject.len() > gridpulse_store::MAX_AUDIT_SUBJECT_BYTES {
        let mut end = gridpulse_store::MAX_AUDIT_SUBJECT_BYTES;
        while !subject.is_char_boundary(end) {
            end -= 1;
        }
        subject.truncate(end);
    }
    AuditEntry {
        at_ms,
        seq: next_seq(),
        subject,
        role: principal.role.as_str().to_owned(),
        method: method.as_str().to_owned(),
        path,
        status,
        detail: principal.user.as_ref().map(|user| format!("user {user}")),
    }
}

/// Records one answered write. Without a store (`--in-memory`) there is no log: the
/// entry is counted as not recorded.
pub async fn record(
    state: &AppState,
    principal: &Principal,
    method: &Method,
    path: &str,
    status: u16,
) {
    let entry = entry(state.clock.now_ms(), principal, method, path, status);
    let Some(store) = &state.store else {
        crate::metrics::record_audit_failure("no_store");
        return;
    };
    match store.append_audit(std::slice::from_ref(&entry)).await {
        Ok(()) => crate::metrics::record_audit_entry(),
        Err(error) => {
            crate::metrics::record_audit_failure("store");
            tracing::error!(%error, subject = %entry.subject, method = %entry.method, path = %entry.path, "audit entry not recorded");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Role;
    use std::sync::Arc;

    fn principal(subject: &str) -> Principal {
        Principal {
            subject: Arc::from(subject),
            role: Role::Utility,
            user: None,
            expires_at: Some(1),
        }
    }

    #[test]
    fn entries_are_unique_within_a_millisecond_and_fit_the_store() {
        let long = "é".repeat(300);
        let a = entry(5, &principal(&long), &Method::POST, &"/x".repeat(3000), 201);
        let b = entry(5, &principal("bob"), &Method::PUT, "/api/meters/m-1", 200);
        assert_ne!(a.seq, b.seq);
        assert!(a.subject.len() <= gridpulse_store::MAX_AUDIT_SUBJECT_BYTES);
        assert!(a.subject.starts_with('é') && a.subject.chars().all(|c| c == 'é'));
        assert_eq!(a.path.len(), 4096);
        assert_eq!(
            (b.role.as_str(), b.method.as_str(), b.status),
            ("utility", "PUT", 200)
        );
        assert_eq!(b.detail, None);
        gridpulse_store::model::check_audit_entry(&a).unwrap();
        gridpulse_store::model::check_audit_entry(&b).unwrap();
    }
}
