//! Accounts and tariffs: the configuration documents that say who a user is, which
//! tariff turns their kWh into money and what monthly budget they set.
//!
//! Usage flows to user actors from the log; accounts and tariffs do not: they are human
//! decisions made over REST, so they live as configuration documents in the store
//! (`ConfigKind::Tariff`, `ConfigKind::User`) and every write is flushed before it is
//! answered. [`AccountBook`] is the one place that reads and writes them, so the rules
//! below hold whoever calls it:
//!
//! * A [`TariffDocument`] is validated by [`TariffDocument::validate`] (its id, its name
//!   and the domain's [`TariffDefinition::validate`]); errors name the field as a path
//!   from the document's root, e.g. `definition.energy.tiers[1].up_to_kwh`.
//! * **Tariffs are immutable once created.** Creating an id again with an equal
//!   document (amounts compared by value, so `"0.20"` equals `"0.2"`) is a no-op;
//!   a different document for an existing id is a conflict. Changing prices under an
//!   existing id mid-period would silently rewrite bills and budgets already computed
//!   from it: a new price is a new tariff id, and accounts move to it.
//! * A [`UserAccount`] references a tariff by id; [`UserAccount::validate`] checks it
//!   exists, that the account's currency (if given) is the tariff's, and that the
//!   monthly budget is positive and exact in that currency's minor unit. The stored
//!   account always carries its resolved currency.
//!
//! Read-compare-write sequences (create-if-absent, budget changes) are serialised
//! within the process by one lock; several API processes sharing one store would need
//! the store's compare-and-set, which the `Store` trait does not offer yet.

use std::sync::Arc;

use gridpulse_domain::{Amount, CreditSettings, Currency, Tariff, TariffDefinition, UserId};
use gridpulse_store::{ConfigKind, Store};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// Longest tariff id, characters.
pub const MAX_TARIFF_ID_LEN: usize = 64;

/// Longest display name of a tariff or an account, characters.
pub const MAX_DISPLAY_NAME_LEN: usize = 200;

/// Serialises read-compare-write sequences on configuration documents in this process
/// (so two concurrent creations of one id cannot both "win").
static CONFIGURATION_WRITE_LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// One field of a document breaks a rule: the field's path, a stable code and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// Path of the field from the document's root, e.g. `definition.currency`.
    pub field: String,
    /// Short stable code for machine clients, e.g. `unknown_tariff`.
    pub code: &'static str,
    /// Why the value is refused, for people.
    pub reason: String,
}

impl FieldError {
    /// A refused `field`.
    pub fn new(field: impl Into<String>, code: &'static str, reason: impl Into<String>) -> Self {
        FieldError {
            field: field.into(),
            code,
            reason: reason.into(),
        }
    }
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "`{}` {}", self.field, self.reason)
    }
}

/// Why an account or tariff operation failed.
#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    /// The document breaks a rule; nothing was stored.
    #[error("{0}")]
    Invalid(FieldError),
    /// No document with this id (`"tariff"` or `"account"`).
    #[error("{0} not found")]
    NotFound(&'static str),
    /// The write conflicts with what is stored; nothing was changed.
    #[error("{0}")]
    Conflict(String),
    /// The store failed or holds an unreadable document.
    #[error("store: {0}")]
    Store(String),
}

impl From<FieldError> for AccountError {
    fn from(error: FieldError) -> Self {
        AccountError::Invalid(error)
    }
}

impl From<gridpulse_store::StoreError> for AccountError {
    fn from(error: gridpulse_store::StoreError) -> Self {
        AccountError::Store(error.to_string())
    }
}

/// What a write did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteOutcome {
    /// There was no document with this id; now there is.
    Created,
    /// An equal document was already stored; nothing changed.
    Unchanged,
    /// The stored document was replaced.
    Replaced,
}

/// Checks a tariff id: 1 to [`MAX_TARIFF_ID_LEN`] characters of `[A-Za-z0-9_.:-]`.
pub fn validate_tariff_id(field: &str, text: &str) -> Result<(), FieldError> {
    if text.is_empty() {
        return Err(FieldError::new(field, "bad_id", "tariff id is empty"));
    }
    if text.len() > MAX_TARIFF_ID_LEN {
        return Err(FieldError::new(
            field,
            "bad_id",
            format!(
                "tariff id is {} bytes long, at most {MAX_TARIFF_ID_LEN} allowed",
                text.len()
            ),
        ));
    }
    if let Some(position) = text
        .bytes()
        .position(|byte| !(byte.is_ascii_alphanumeric() || b"_.:-".contains(&byte)))
    {
        return Err(FieldError::new(
            field,
            "bad_id",
            format!("tariff id has a character outside [A-Za-z0-9_.:-] at position {position}"),
        ));
    }
    Ok(())
}

/// Checks a display name: not blank, at most [`MAX_DISPLAY_NAME_LEN`] characters, no
/// control characters.
fn validate_display_name(field: &str, name: &str) -> Result<(), FieldError> {
    if name.trim().is_empty() {
        return Err(FieldError::new(field, "empty_name", "must not be empty"));
    }
    let length = name.chars().count();
    if length > MAX_DISPLAY_NAME_LEN {
        return Err(FieldError::new(
            field,
            "name_too_long",
            format!("is {length} characters long, at most {MAX_DISPLAY_NAME_LEN} allowed"),
        ));
    }
    if name.chars().any(char::is_control) {
        return Err(FieldError::new(
            field,
            "control_character",
            "must not contain control characters",
        ));
    }
    Ok(())
}

/// A tariff as created over REST and stored (`ConfigKind::Tariff`):
/// `{"id": "standard-gbp", "name": "Standard", "definition": {TariffDefinition}}`.
/// The definition is nested (not flattened) so its own unknown-key check stays exact.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TariffDocument {
    /// 1 to 64 characters of `[A-Za-z0-9_.:-]`.
    pub id: String,
    /// Display name, e.g. `"Standard variable"`.
    pub name: String,
    /// Currency, time zone, billing period, standing charge and energy pricing.
    pub definition: TariffDefinition,
}

impl TariffDocument {
    /// Checks the id, the name and the definition; the first broken rule is reported
    /// with its path (definition fields as `definition.<domain path>`).
    pub fn validate(&self) -> Result<Tariff, FieldError> {
        validate_tariff_id("id", &self.id)?;
        validate_display_name("name", &self.name)?;
        self.definition.validate().map_err(|error| {
            FieldError::new(
                format!("definition.{}", error.field),
                error.reason.code(),
                error.reason.to_string(),
            )
        })
    }
}

/// A user's account as created over REST and stored (`ConfigKind::User`).
///
/// `monthly_budget` is an exact decimal string in the account's currency; `currency`
/// may be left out when a `tariff` is given (it is the tariff's) and is stored
/// resolved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserAccount {
    /// The user id (1 to 47 characters of `[A-Za-z0-9_.:-]`, as meter owners use).
    pub id: UserId,
    /// Display name.
    pub name: String,
    /// Id of the tariff the user's energy is priced by.
    #[serde(default)]
    pub tariff: Option<String>,
    /// Monthly budget, e.g. `"120.00"` (the 70/90/100 % alerts are against it).
    #[serde(default)]
    pub monthly_budget: Option<Amount>,
    /// ISO 4217 code of the account's money; the tariff's when a tariff is set.
    #[serde(default)]
    pub currency: Option<String>,
    /// Prepaid credit settings for the user's prepaid meters: low-credit threshold,
    /// run-out warning hours, auto top-up (trigger, amount).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credit: Option<CreditSettings>,
}

impl UserAccount {
    /// Checks every rule given the tariff the account references as found in the store
    /// (`None` when it references none or it does not exist) and returns the account as
    /// it is stored (currency resolved from the tariff).
    pub fn validate(&self, referenced_tariff: Option<&Tariff>) -> Result<UserAccount, FieldError> {
        validate_display_name("name", &self.name)?;
        let tariff_currency = match &self.tariff {
            None => None,
            Some(tariff_id) => {
                validate_tariff_id("tariff", tariff_id)?;
                let tariff = referenced_tariff.ok_or_else(|| {
                    FieldError::new(
                        "tariff",
                        "unknown_tariff",
                        format!("no tariff `{tariff_id}`: create it with POST /api/tariffs first"),
                    )
                })?;
                Some(tariff.currency())
            }
        };
        let given_currency = self
            .currency
            .as_deref()
            .map(|code| {
                Currency::from_code(code).map_err(|error| {
                    FieldError::new("currency", "unknown_currency", error.to_string())
                })
            })
            .transpose()?;
        let currency = match (given_currency, tariff_currency) {
            (Some(given), Some(of_tariff)) if given != of_tariff => {
                return Err(FieldError::new(
                    "currency",
                    "currency_mismatch",
                    format!(
                        "is {}, but tariff `{}` is in {}: an account's money is in its tariff's currency",
                        given.code(),
                        self.tariff.as_deref().unwrap_or_default(),
                        of_tariff.code()
                    ),
                ));
            }
            (given, of_tariff) => given.or(of_tariff),
        };
        if let Some(budget) = self.monthly_budget {
            if budget <= Amount::ZERO {
                return Err(FieldError::new(
                    "monthly_budget",
                    "budget_not_positive",
                    format!("must be greater than zero, got {budget}"),
                ));
            }
            let currency = currency.ok_or_else(|| {
                FieldError::new(
                    "currency",
                    "currency_required",
                    "a monthly budget needs a currency: set `currency` or a `tariff`",
                )
            })?;
            let exact_in_minor_units = budget
                .round_to_minor_unit(currency)
                .to_amount()
                .is_ok_and(|rounded| rounded == budget);
            if !exact_in_minor_units {
                return Err(FieldError::new(
                    "monthly_budget",
                    "too_precise",
                    format!(
                        "{budget} has more decimal places than {} allows ({})",
                        currency.code(),
                        currency.minor_unit_digits()
                    ),
                ));
            }
        }
        if let Some(settings) = &self.credit {
            settings.validate().map_err(|error| {
                FieldError::new(
                    format!("credit.{}", error.field().unwrap_or("settings")),
                    "invalid_credit_settings",
                    error.to_string(),
                )
            })?;
        }
        Ok(UserAccount {
            currency: currency.map(|currency| currency.code().to_owned()),
            ..self.clone()
        })
    }
}

/// One page of accounts in id order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AccountPage {
    /// The accounts of this page.
    pub users: Vec<UserAccount>,
    /// Pass as `after` to get the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next: Option<UserId>,
    /// Accounts in all.
    pub total: usize,
}

/// Reads and writes tariffs and accounts in the store, enforcing the rules above;
/// every write is flushed before it returns.
#[derive(Debug, Clone)]
pub struct AccountBook {
    store: Arc<dyn Store>,
}

impl AccountBook {
    /// A book over `store`.
    pub fn new(store: Arc<dyn Store>) -> AccountBook {
        AccountBook { store }
    }

    async fn read_document<T: DeserializeOwned>(
        &self,
        kind: ConfigKind,
        id: &str,
    ) -> Result<Option<T>, AccountError> {
        match self.store.get_config(kind, id).await? {
            None => Ok(None),
            Some(json) => serde_json::from_slice(&json).map(Some).map_err(|error| {
                AccountError::Store(format!(
                    "stored {} `{id}` is unreadable: {error}",
                    kind.as_str()
                ))
            }),
        }
    }

    async fn write_document<T: Serialize>(
        &self,
        kind: ConfigKind,
        id: &str,
        document: &T,
    ) -> Result<(), AccountError> {
        let json = serde_json::to_vec(document)
            .map_err(|error| AccountError::Store(format!("encoding {}: {error}", kind.as_str())))?;
        self.store.put_config(kind, id, &json).await?;
        self.store.flush().await?;
        Ok(())
    }

    /// Creates a tariff (validated, durable before returning); an equal document under
    /// the same id is [`WriteOutcome::Unchanged`], a different one a conflict.
    pub async fn create_tariff(
        &self,
        document: TariffDocument,
    ) -> Result<(TariffDocument, WriteOutcome), AccountError> {
        document.validate()?;
        let _serialised = CONFIGURATION_WRITE_LOCK.lock().await;
        if let Some(stored) = self.tariff(&document.id).await? {
            if stored == document {
                return Ok((stored, WriteOutcome::Unchanged));
            }
            return Err(AccountError::Conflict(format!(
                "tariff `{}` already exists with a different definition; tariffs are immutable \
                 (changing prices would rewrite bills already computed from it): create a new \
                 tariff id and move accounts to it",
                document.id
            )));
        }
        self.write_document(ConfigKind::Tariff, &document.id, &document)
            .await?;
        Ok((document, WriteOutcome::Created))
    }

    /// One tariff document.
    pub async fn tariff(&self, id: &str) -> Result<Option<TariffDocument>, AccountError> {
        self.read_document(ConfigKind::Tariff, id).await
    }

    /// Every tariff, in id order.
    pub async fn tariffs(&self) -> Result<Vec<TariffDocument>, AccountError> {
        let mut tariffs = Vec::new();
        for (id, json) in self.store.list_config(ConfigKind::Tariff).await? {
            let document: TariffDocument = serde_json::from_slice(&json).map_err(|error| {
                AccountError::Store(format!("stored tariff `{id}` is unreadable: {error}"))
            })?;
            tariffs.push(document);
        }
        tariffs.sort_by(|left, right| left.id.cmp(&right.id));
        Ok(tariffs)
    }

    /// The validated tariff an account references (`None` if it references none or the
    /// tariff does not exist).
    async fn referenced_tariff(
        &self,
        account: &UserAccount,
    ) -> Result<Option<Tariff>, AccountError> {
        let Some(tariff_id) = &account.tariff else {
            return Ok(None);
        };
        if validate_tariff_id("tariff", tariff_id).is_err() {
            // `UserAccount::validate` reports the bad id.
            return Ok(None);
        }
        match self.tariff(tariff_id).await? {
            None => Ok(None),
            Some(document) => document.validate().map(Some).map_err(|error| {
                AccountError::Store(format!("stored tariff `{tariff_id}` is invalid: {error}"))
            }),
        }
    }

    async fn validated(&self, account: &UserAccount) -> Result<UserAccount, AccountError> {
        let tariff = self.referenced_tariff(account).await?;
        Ok(account.validate(tariff.as_ref())?)
    }

    /// Creates an account (validated, durable before returning); an equal account under
    /// the same id is [`WriteOutcome::Unchanged`], a different one a conflict (replace
    /// it with [`AccountBook::replace_account`]).
    pub async fn create_account(
        &self,
        account: UserAccount,
    ) -> Result<(UserAccount, WriteOutcome), AccountError> {
        let account = self.validated(&account).await?;
        let _serialised = CONFIGURATION_WRITE_LOCK.lock().await;
        if let Some(stored) = self.account(account.id).await? {
            if stored == account {
                return Ok((stored, WriteOutcome::Unchanged));
            }
            return Err(AccountError::Conflict(format!(
                "account `{}` already exists and differs: replace it with PUT /api/users/{}",
                account.id, account.id
            )));
        }
        self.write_document(ConfigKind::User, account.id.as_str(), &account)
            .await?;
        Ok((account, WriteOutcome::Created))
    }

    /// Creates or replaces an account (validated, durable before returning).
    pub async fn replace_account(
        &self,
        account: UserAccount,
    ) -> Result<(UserAccount, WriteOutcome), AccountError> {
        let account = self.validated(&account).await?;
        let _serialised = CONFIGURATION_WRITE_LOCK.lock().await;
        let outcome = match self.account(account.id).await? {
            None => WriteOutcome::Created,
            Some(stored) if stored == account => return Ok((stored, WriteOutcome::Unchanged)),
            Some(_) => WriteOutcome::Replaced,
        };
        self.write_document(ConfigKind::User, account.id.as_str(), &account)
            .await?;
        Ok((account, outcome))
    }

    /// One account.
    pub async fn account(&self, id: UserId) -> Result<Option<UserAccount>, AccountError> {
        self.read_document(ConfigKind::User, id.as_str()).await
    }

    /// Accounts in id order after `after`, at most `limit`.
    pub async fn accounts(
        &self,
        after: Option<UserId>,
        limit: usize,
    ) -> Result<AccountPage, AccountError> {
        let mut accounts = Vec::new();
        for (id, json) in self.store.list_config(ConfigKind::User).await? {
            let account: UserAccount = serde_json::from_slice(&json).map_err(|error| {
                AccountError::Store(format!("stored user `{id}` is unreadable: {error}"))
            })?;
            accounts.push(account);
        }
        accounts.sort_by(|left, right| left.id.as_str().cmp(right.id.as_str()));
        let total = accounts.len();
        let mut users: Vec<UserAccount> = accounts
            .into_iter()
            .filter(|account| after.is_none_or(|after| account.id.as_str() > after.as_str()))
            .take(limit.saturating_add(1))
            .collect();
        let next = if users.len() > limit {
            users.truncate(limit);
            users.last().map(|account| account.id)
        } else {
            None
        };
        Ok(AccountPage { users, next, total })
    }

    /// Sets (or with `None` clears) an account's monthly budget, checked like any
    /// account change; durable before returning.
    pub async fn set_monthly_budget(
        &self,
        id: UserId,
        monthly_budget: Option<Amount>,
    ) -> Result<UserAccount, AccountError> {
        let _serialised = CONFIGURATION_WRITE_LOCK.lock().await;
        let stored = self
            .account(id)
            .await?
            .ok_or(AccountError::NotFound("account"))?;
        let changed = self
            .validated(&UserAccount {
                monthly_budget,
                ..stored.clone()
            })
            .await?;
        if changed != stored {
            self.write_document(ConfigKind::User, id.as_str(), &changed)
                .await?;
        }
        Ok(changed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flat_gbp() -> TariffDocument {
        serde_json::from_value(serde_json::json!({
            "id": "flat-gbp",
            "name": "Flat",
            "definition": {
                "currency": "GBP",
                "time_zone": "Europe/London",
                "billing_period_start_day": 1,
                "standing_charge_per_day": "0.50",
                "energy": {"kind": "flat", "rate_per_kwh": "0.245"}
            }
        }))
        .unwrap()
    }

    fn account(budget: Option<&str>, currency: Option<&str>, tariff: Option<&str>) -> UserAccount {
        UserAccount {
            id: UserId::new("u-1").unwrap(),
            name: "Alice".into(),
            tariff: tariff.map(str::to_owned),
            monthly_budget: budget.map(|text| Amount::parse(text).unwrap()),
            currency: currency.map(str::to_owned),
            credit: None,
        }
    }

    #[test]
    fn tariff_ids_follow_the_documented_alphabet_and_length() {
        assert!(validate_tariff_id("id", "standard-gbp:v1.2_x").is_ok());
        assert!(validate_tariff_id("id", &"a".repeat(64)).is_ok());
        for bad in ["", "has space", "slash/no", &"a".repeat(65), "é"] {
            let error = validate_tariff_id("id", bad).unwrap_err();
            assert_eq!(
                (error.field.as_str(), error.code),
                ("id", "bad_id"),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn definition_errors_are_prefixed_with_their_path_in_the_document() {
        let mut document = flat_gbp();
        document.definition.currency = "XXX".into();
        let error = document.validate().unwrap_err();
        assert_eq!(error.field, "definition.currency");
        assert_eq!(error.code, "unknown_currency");
    }

    #[test]
    fn account_currency_comes_from_the_tariff_and_must_match_it() {
        let tariff = flat_gbp().validate().unwrap();
        let resolved = account(Some("120.00"), None, Some("flat-gbp"))
            .validate(Some(&tariff))
            .unwrap();
        assert_eq!(resolved.currency.as_deref(), Some("GBP"));
        let mismatch = account(Some("120"), Some("EUR"), Some("flat-gbp"))
            .validate(Some(&tariff))
            .unwrap_err();
        assert_eq!(
            (mismatch.field.as_str(), mismatch.code),
            ("currency", "currency_mismatch")
        );
        let missing = account(None, None, Some("flat-gbp"))
            .validate(None)
            .unwrap_err();
        assert_eq!(
            (missing.field.as_str(), missing.code),
            ("tariff", "unknown_tariff")
        );
    }

    #[test]
    fn budgets_are_positive_exact_in_minor_units_and_need_a_currency() {
        for (budget, code) in [
            ("0", "budget_not_positive"),
            ("-5.00", "budget_not_positive"),
            ("10.001", "too_precise"),
        ] {
            let error = account(Some(budget), Some("GBP"), None)
                .validate(None)
                .unwrap_err();
            assert_eq!(
                (error.field.as_str(), error.code),
                ("monthly_budget", code),
                "{budget}"
            );
        }
        let error = account(Some("10"), None, None).validate(None).unwrap_err();
        assert_eq!(
            (error.field.as_str(), error.code),
            ("currency", "currency_required")
        );
        let error = account(Some("10"), Some("gbp"), None)
            .validate(None)
            .unwrap_err();
        assert_eq!(
            (error.field.as_str(), error.code),
            ("currency", "unknown_currency")
        );
        let yen = account(Some("5000"), Some("JPY"), None)
            .validate(None)
            .unwrap();
        assert_eq!(yen.monthly_budget, Some(Amount::parse("5000").unwrap()));
        let error = account(Some("5000.5"), Some("JPY"), None)
            .validate(None)
            .unwrap_err();
        assert_eq!(error.code, "too_precise");
    }

    #[test]
    fn display_names_must_be_present_short_and_printable() {
        for (name, code) in [("  ", "empty_name"), ("a\u{7}b", "control_character")] {
            let mut bad = account(None, None, None);
            bad.name = name.into();
            let error = bad.validate(None).unwrap_err();
            assert_eq!((error.field.as_str(), error.code), ("name", code));
        }
        let mut long = account(None, None, None);
        long.name = "n".repeat(MAX_DISPLAY_NAME_LEN + 1);
        assert_eq!(long.validate(None).unwrap_err().code, "name_too_long");
    }
}
