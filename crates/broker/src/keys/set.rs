//! Rotating key sets: for each purpose (broker sessions, grant tokens, the
//! SSH user CA) the keys in the store, the one that signs now, and every
//! one whose signatures still verify.
//!
//! A key signs during its window (`signs_from`..`signs_until`) and what it
//! signed verifies until `verifies_until`, later by the overlap: the
//! longest a token it signed can live. Its successor is made a while before
//! the window ends (`publish_ahead`) and listed at once, so that verifiers
//! that cache keys (resource servers reading the JWKS, other replicas) know
//! it before anything signed with it reaches them. The rules are pure
//! functions of the windows and the time ([`signer_at`], [`successor`]);
//! [`KeySet`] applies them to the store, which every replica shares: any
//! replica may make the successor, and only one does.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration as StdDuration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hourglass_core::Timestamp;

use super::{Ed25519Key, StoreKey};
use crate::error::{Error, Result};
use crate::store::{Store, StoredKey};

/// What a key signs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyPurpose {
    /// The broker's own sessions (`POST /v1/auth/token`).
    Session,
    /// Grant tokens of the token provider, published as the JWKS.
    GrantToken,
    /// The SSH user CA's key.
    SshUserCa,
}

impl KeyPurpose {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyPurpose::Session => "session",
            KeyPurpose::GrantToken => "grant_token",
            KeyPurpose::SshUserCa => "ssh_user_ca",
        }
    }

    pub fn parse(text: &str) -> Option<KeyPurpose> {
        [KeyPurpose::Session, KeyPurpose::GrantToken, KeyPurpose::SshUserCa]
            .into_iter()
            .find(|purpose| purpose.as_str() == text.replace('-', "_"))
    }
}

/// When keys of a purpose are replaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RotationPolicy {
    /// How long a key signs.
    pub period: StdDuration,
    /// How long before its window ends its successor is made and listed.
    pub publish_ahead: StdDuration,
    /// How long after its window ends what it signed still verifies.
    pub overlap: StdDuration,
}

impl RotationPolicy {
    /// A key that signs for as long as anyone will run this broker (the
    /// SSH user CA: hosts trust it by hand, so it changes only on purpose).
    pub const NEVER: RotationPolicy = RotationPolicy {
        period: StdDuration::from_secs(100 * 366 * 24 * 3600),
        publish_ahead: StdDuration::from_secs(0),
        overlap: StdDuration::from_secs(0),
    };
}

/// A key's windows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyWindow {
    pub kid: String,
    pub signs_from: Timestamp,
    pub signs_until: Timestamp,
    pub verifies_until: Timestamp,
}

impl KeyWindow {
    fn signs_at(&self, now: Timestamp) -> bool {
        self.signs_from <= now && now < self.signs_until
    }
}

fn plus(at: Timestamp, duration: StdDuration) -> Timestamp {
    at.plus_millis(i64::try_from(duration.as_millis()).unwrap_or(i64::MAX / 4))
}

fn minus(at: Timestamp, duration: StdDuration) -> Timestamp {
    at.plus_millis(-i64::try_from(duration.as_millis()).unwrap_or(0))
}

/// The key that signs at `now`: of those in their window, the newest. None
/// when no window holds `now`.
pub fn signer_at(windows: &[KeyWindow], now: Timestamp) -> Option<&KeyWindow> {
    windows.iter().filter(|w| w.signs_at(now)).max_by_key(|w| (w.signs_from, w.kid.clone()))
}

/// How far apart the clocks of replicas (and of a broker's own callers) may
/// be: a key made because none signed starts signing this long before now,
/// so a replica whose clock is behind signs with it too instead of making
/// another.
const CLOCK_SKEW: StdDuration = StdDuration::from_secs(5 * 60);

/// The window of the key to make now, if one is due: the first key of a
/// purpose; a successor once the signing key is within `publish_ahead` of
/// its end and none follows it; a key at once when none signs any more.
pub fn successor(windows: &[KeyWindow], now: Timestamp, policy: &RotationPolicy) -> Option<KeyWindow> {
    let Some(current) = signer_at(windows, now) else {
        if windows.iter().any(|w| w.signs_from > now) {
            // One starts later on this clock: made by a replica whose clock
            // is ahead. It signs soon; another key would be one too many.
            return None;
        }
        // None signs: one from now (less the skew allowance, not before the
        // last window's end) for a period.
        let last_end = windows.iter().map(|w| w.signs_until).max();
        let from = last_end.map_or(minus(now, CLOCK_SKEW), |end| end.max(minus(now, CLOCK_SKEW)));
        let until = plus(now, policy.period);
        return Some(KeyWindow {
            kid: String::new(),
            signs_from: from,
            signs_until: until,
            verifies_until: plus(until, policy.overlap),
        });
    };
    let followed = windows.iter().any(|w| w.signs_from >= current.signs_until);
    let due = plus(now, policy.publish_ahead) >= current.signs_until;
    (due && !followed).then(|| {
        let until = plus(current.signs_until, policy.period);
        KeyWindow {
            kid: String::new(),
            signs_from: current.signs_until,
            signs_until: until,
            verifies_until: plus(until, policy.overlap),
        }
    })
}

/// Keys of one purpose as this broker holds them.
struct Loaded {
    windows: Vec<KeyWindow>,
    keys: HashMap<String, Arc<Ed25519Key>>,
}

/// The keys of one purpose, from the store: the one that signs now and every
/// one that verifies. Refreshed from the store every so often
/// ([`KeySet::refresh`]), which also makes a successor when one is due.
pub struct KeySet {
    purpose: KeyPurpose,
    /// None for a set of one key held in memory ([`KeySet::single`]).
    backing: Option<(Store, Arc<StoreKey>)>,
    policy: RotationPolicy,
    loaded: RwLock<Arc<Loaded>>,
    /// When an unknown key id last made this replica read the store again.
    last_lookup: std::sync::Mutex<Option<std::time::Instant>>,
}

/// An unknown key id reads the store again at most this often: a token
/// signed by a key another replica just made verifies here at once, and a
/// flood of made-up key ids costs the store one read per interval.
const LOOKUP_INTERVAL: StdDuration = StdDuration::from_secs(2);

/// The label a key's sealed seed is bound to.
fn label(purpose: &str, kid: &str) -> String {
    format!("{purpose}/{kid}")
}

impl KeySet {
    /// The keys of `purpose`, making the first one if the store has none:
    /// `legacy` if given (the key an older broker kept in its data
    /// directory, so that what it signed still verifies), else a new one.
    pub async fn open(
        store: Store,
        store_key: Arc<StoreKey>,
        purpose: KeyPurpose,
        policy: RotationPolicy,
        legacy: Option<Ed25519Key>,
        now: Timestamp,
    ) -> Result<KeySet> {
        let set = KeySet {
            purpose,
            backing: Some((store, store_key)),
            policy,
            loaded: RwLock::new(Arc::new(Loaded { windows: Vec::new(), keys: HashMap::new() })),
            last_lookup: std::sync::Mutex::new(None),
        };
        set.rotate(now, legacy).await?;
        set.refresh(now).await?;
        Ok(set)
    }

    /// A set of one key, in memory only, signing and verifying forever (tests,
    /// `hourglassd policy check`).
    pub fn single(purpose: KeyPurpose, key: Ed25519Key) -> KeySet {
        let window = KeyWindow {
            kid: key.kid.clone(),
            signs_from: Timestamp::from_unix_millis(0),
            signs_until: Timestamp::from_unix_millis(i64::MAX / 4),
            verifies_until: Timestamp::from_unix_millis(i64::MAX / 4),
        };
        let keys = HashMap::from([(key.kid.clone(), Arc::new(key))]);
        KeySet {
            purpose,
            backing: None,
            policy: RotationPolicy::NEVER,
            loaded: RwLock::new(Arc::new(Loaded { windows: vec![window], keys })),
            last_lookup: std::sync::Mutex::new(None),
        }
    }

    pub fn purpose(&self) -> KeyPurpose {
        self.purpose
    }

    /// Reads the store again: keys another replica made, windows changed by
    /// `hourglassd keys rotate`; makes a successor when one is due.
    pub async fn refresh(&self, now: Timestamp) -> Result<()> {
        let Some((store, _)) = &self.backing else { return Ok(()) };
        let stored = store.signing_keys(self.purpose.as_str()).await?;
        if successor(&stored.iter().map(window_of).collect::<Vec<_>>(), now, &self.policy).is_some() {
            self.rotate(now, None).await?;
        }
        self.reload(now).await
    }

    /// Reads the store again, making nothing.
    async fn reload(&self, now: Timestamp) -> Result<()> {
        let Some((store, _)) = &self.backing else { return Ok(()) };
        let stored = store.signing_keys(self.purpose.as_str()).await?;
        let windows: Vec<KeyWindow> = stored.iter().map(window_of).collect();
        let previous = self.current();
        let mut keys = HashMap::new();
        for key in stored.iter().filter(|key| key.verifies_until > now) {
            let opened = match previous.keys.get(&key.kid) {
                Some(known) => Arc::clone(known),
                None => Arc::new(self.unseal(key)?),
            };
            keys.insert(key.kid.clone(), opened);
        }
        let windows = windows.into_iter().filter(|w| keys.contains_key(&w.kid)).collect();
        *self.loaded.write().unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(Loaded { windows, keys });
        Ok(())
    }

    /// Makes the key [`successor`] says is due (`first` if it is the first),
    /// in a transaction that re-reads the keys under the purpose's turn, so
    /// that replicas rotating at the same moment make one key.
    async fn rotate(&self, now: Timestamp, first: Option<Ed25519Key>) -> Result<()> {
        let Some((store, _)) = &self.backing else { return Ok(()) };
        let mut tx = store.begin().await?;
        let stored = tx.signing_keys_for_update(self.purpose.as_str()).await?;
        let windows: Vec<KeyWindow> = stored.iter().map(window_of).collect();
        let Some(window) = successor(&windows, now, &self.policy) else { return Ok(()) };
        let key = match first.filter(|_| stored.is_empty()) {
            Some(key) => key,
            None => Ed25519Key::generate()?,
        };
        tx.insert_signing_key(&self.seal(&key, &window, now)?).await?;
        tx.commit().await?;
        tracing::info!(
            purpose = self.purpose.as_str(),
            kid = %key.kid,
            signs_from = %window.signs_from,
            "signing key made"
        );
        Ok(())
    }

    /// A stored key for `key` with `window`'s times.
    fn seal(&self, key: &Ed25519Key, window: &KeyWindow, now: Timestamp) -> Result<StoredKey> {
        let purpose = self.purpose.as_str();
        let Some((_, store_key)) = &self.backing else {
            return Err(Error::Internal("an in-memory key set seals nothing".into()));
        };
        Ok(StoredKey {
            kid: key.kid.clone(),
            purpose: purpose.to_owned(),
            public_key: STANDARD.encode(key.public()),
            sealed_private: store_key.seal(&label(purpose, &key.kid), key.seed().as_ref())?,
            sealed_with: store_key.id.clone(),
            created_at: now,
            signs_from: window.signs_from,
            signs_until: window.signs_until,
            verifies_until: window.verifies_until,
        })
    }

    fn unseal(&self, key: &StoredKey) -> Result<Ed25519Key> {
        let Some((_, store_key)) = &self.backing else {
            return Err(Error::Internal("an in-memory key set opens nothing".into()));
        };
        let seed = store_key
            .open(&label(&key.purpose, &key.kid), &key.sealed_with, &key.sealed_private)
            .map_err(|error| Error::Config(format!("the store's {} key {}: {error}", key.purpose, key.kid)))?;
        let seed: [u8; 32] = seed.as_slice().try_into().map_err(|_| {
            Error::Config(format!("the store's {} key {} is not an Ed25519 seed", key.purpose, key.kid))
        })?;
        let opened = Ed25519Key::from_seed(&seed)?;
        if opened.kid != key.kid || STANDARD.encode(opened.public()) != key.public_key {
            return Err(Error::Config(format!(
                "the store's {} key {} does not match its public key",
                key.purpose, key.kid
            )));
        }
        Ok(opened)
    }

    fn current(&self) -> Arc<Loaded> {
        Arc::clone(&self.loaded.read().unwrap_or_else(std::sync::PoisonError::into_inner))
    }

    /// The key that signs at `now`. After `open` there is one; should the
    /// last window end without a refresh (a broker cut off from its store
    /// for a whole rotation period), the newest key signs on rather than none.
    pub fn signer(&self, now: Timestamp) -> Result<Arc<Ed25519Key>> {
        let loaded = self.current();
        let kid = signer_at(&loaded.windows, now)
            .or_else(|| loaded.windows.iter().filter(|w| w.signs_from <= now).max_by_key(|w| w.signs_from))
            .or_else(|| loaded.windows.last())
            .map(|w| w.kid.clone())
            .unwrap_or_default();
        loaded
            .keys
            .get(&kid)
            .cloned()
            .ok_or_else(|| Error::Internal(format!("no {} key to sign with", self.purpose.as_str())))
    }

    /// Reads the store again when `kid` is not among the keys held (a key
    /// another replica made since the last refresh), at most once per
    /// [`LOOKUP_INTERVAL`]. It never makes a key: a token naming a key
    /// nobody has is the caller's to refuse, not a reason to rotate.
    pub async fn look_up(&self, kid: &str, now: Timestamp) {
        if self.backing.is_none() || self.current().keys.contains_key(kid) {
            return;
        }
        {
            let mut last = self.last_lookup.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if last.is_some_and(|at| at.elapsed() < LOOKUP_INTERVAL) {
                return;
            }
            *last = Some(std::time::Instant::now());
        }
        if let Err(error) = self.reload(now).await {
            tracing::warn!(purpose = self.purpose.as_str(), "reading signing keys failed: {error}");
        }
    }

    /// Ends the signing key's window `after` from now (time for every
    /// replica to read the store) and makes the key that signs from then:
    /// `hourglassd keys rotate`. What the old key signed verifies through
    /// its overlap. Returns the new key's window.
    pub async fn rotate_now(&self, now: Timestamp, after: StdDuration) -> Result<KeyWindow> {
        let Some((store, _)) = &self.backing else {
            return Err(Error::Internal("an in-memory key set does not rotate".into()));
        };
        let from = plus(now, after);
        let mut tx = store.begin().await?;
        let stored = tx.signing_keys_for_update(self.purpose.as_str()).await?;
        for key in stored.iter().filter(|key| key.signs_until > from) {
            let verifies_until = plus(from, self.policy.overlap).max(key.signs_from);
            tx.retire_signing_key(&key.kid, from.max(key.signs_from), verifies_until).await?;
        }
        let key = Ed25519Key::generate()?;
        let window = KeyWindow {
            kid: key.kid.clone(),
            signs_from: from,
            signs_until: plus(from, self.policy.period),
            verifies_until: plus(plus(from, self.policy.period), self.policy.overlap),
        };
        tx.insert_signing_key(&self.seal(&key, &window, now)?).await?;
        tx.commit().await?;
        self.refresh(now).await?;
        Ok(window)
    }

    /// The key with id `kid`, if its signatures verify at `now`.
    pub fn verifier(&self, kid: &str, now: Timestamp) -> Option<Arc<Ed25519Key>> {
        let loaded = self.current();
        let window = loaded.windows.iter().find(|w| w.kid == kid)?;
        (now < window.verifies_until).then(|| loaded.keys.get(kid).cloned()).flatten()
    }

    /// Every key that verifies at `now`, as JWKs (RFC 8037): the signing
    /// one, its successor published ahead, its predecessors in their overlap.
    pub fn jwks(&self, now: Timestamp) -> Vec<serde_json::Value> {
        let loaded = self.current();
        loaded
            .windows
            .iter()
            .filter(|w| now < w.verifies_until)
            .filter_map(|w| loaded.keys.get(&w.kid))
            .map(|key| key.jwk())
            .collect()
    }

    /// The windows of the keys held, by start.
    pub fn windows(&self) -> Vec<KeyWindow> {
        self.current().windows.clone()
    }
}

fn window_of(key: &StoredKey) -> KeyWindow {
    KeyWindow {
        kid: key.kid.clone(),
        signs_from: key.signs_from,
        signs_until: key.signs_until,
        verifies_until: key.verifies_until,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: StdDuration = StdDuration::from_secs(3600);

    fn policy() -> RotationPolicy {
        RotationPolicy { period: 30 * 24 * HOUR, publish_ahead: 24 * HOUR, overlap: 8 * HOUR }
    }

    fn at(hours: i64) -> Timestamp {
        Timestamp::from_unix_millis(1_800_000_000_000 + hours * 3_600_000)
    }

    fn key(kid: &str, from: i64, until: i64, verifies: i64) -> KeyWindow {
        KeyWindow { kid: kid.into(), signs_from: at(from), signs_until: at(until), verifies_until: at(verifies) }
    }

    #[test]
    fn keys_the_first_key_is_made_at_once_and_signs_for_the_period() {
        let first = successor(&[], at(0), &policy()).expect("no key: one is due");
        assert_eq!(first.signs_from, minus(at(0), CLOCK_SKEW), "signs from now, less the clocks' skew");
        assert_eq!(first.signs_until, at(720), "for 30 days");
        assert_eq!(first.verifies_until, at(728), "and verifies for the overlap after");
    }

    #[test]
    fn keys_a_clock_behind_the_one_that_made_the_key_makes_none() {
        // Made by a replica (or read with a caller's time) a moment ahead.
        let made = successor(&[], at(0), &policy()).expect("the first key");
        let made = KeyWindow { kid: "a".into(), ..made };
        let behind = at(0).plus_millis(-1_500);
        assert_eq!(signer_at(std::slice::from_ref(&made), behind).map(|w| w.kid.as_str()), Some("a"), "it signs");
        assert_eq!(successor(std::slice::from_ref(&made), behind, &policy()), None, "no second key");
        let later = key("b", 10, 720, 728);
        assert_eq!(successor(&[later], at(5), &policy()), None, "nor when the only key starts later");
    }

    #[test]
    fn keys_a_successor_is_made_ahead_of_the_window_end_and_once() {
        let current = key("a", 0, 720, 728);
        assert_eq!(successor(std::slice::from_ref(&current), at(600), &policy()), None, "not yet due");
        let next = successor(std::slice::from_ref(&current), at(700), &policy()).expect("within a day of the end");
        assert_eq!(next.signs_from, at(720), "it signs when the current one stops: no gap, no overlap in signing");
        let both = [current.clone(), key("b", 720, 1440, 1448)];
        assert_eq!(successor(&both, at(700), &policy()), None, "made once");
        assert_eq!(signer_at(&both, at(700)).map(|w| w.kid.as_str()), Some("a"), "the current one signs until its end");
        assert_eq!(signer_at(&both, at(720)).map(|w| w.kid.as_str()), Some("b"), "then its successor");
    }

    #[test]
    fn keys_a_set_whose_keys_all_stopped_signing_gets_one_at_once() {
        let old = key("a", 0, 720, 728);
        let fresh = successor(&[old], at(2000), &policy()).expect("none signs");
        assert_eq!(fresh.signs_from, minus(at(2000), CLOCK_SKEW), "signs from now, less the clocks' skew");
        assert_eq!(fresh.signs_until, at(2720), "for a period");
    }

    #[test]
    fn keys_the_newest_of_overlapping_windows_signs() {
        // `hourglassd keys rotate` ends the current window early: the new key starts.
        let windows = [key("a", 0, 720, 728), key("b", 100, 820, 828)];
        assert_eq!(signer_at(&windows, at(150)).map(|w| w.kid.as_str()), Some("b"));
        assert_eq!(signer_at(&windows, at(50)).map(|w| w.kid.as_str()), Some("a"));
    }

    #[tokio::test]
    async fn keys_a_token_naming_an_unknown_key_makes_no_key() {
        let dir = tempfile::tempdir().expect("a directory");
        let store = Store::open_sqlite(&dir.path().join("hourglass.db")).await.expect("a store");
        let store_key = Arc::new(StoreKey::from_bytes(&[9; 32]).expect("a store key"));
        let set =
            KeySet::open(store.clone(), store_key, KeyPurpose::Session, policy(), None, at(0)).await.expect("a set");
        // Looked up at a time no key signs at: making keys is the refresh's
        // job, never an unknown token's.
        set.look_up("a-kid-nobody-has", at(2000)).await;
        let stored = store.signing_keys(KeyPurpose::Session.as_str()).await.expect("keys");
        assert_eq!(stored.len(), 1, "only the key the set opened with: {:?}", set.windows());
    }

    /// Two replicas on one PostgreSQL store, each with its key set.
    async fn two_replicas() -> (KeySet, KeySet) {
        let database = hourglass_e2e::postgres::PostgresCluster::shared().new_database();
        let location = crate::store::StoreLocation::postgres(database.url("sslmode=disable"));
        let options = crate::store::OpenOptions::default();
        let a = Store::open(&location, &options).await.expect("replica a");
        let b = Store::open(&location, &options).await.expect("replica b");
        let store_key = Arc::new(StoreKey::from_bytes(&[9; 32]).expect("a store key"));
        let open = |store: Store| {
            let store_key = Arc::clone(&store_key);
            async move {
                KeySet::open(store, store_key, KeyPurpose::Session, policy(), None, at(0)).await.expect("a key set")
            }
        };
        let (a, b) = tokio::join!(open(a), open(b));
        (a, b)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn keys_replicas_share_one_key_and_one_successor() {
        let (a, b) = two_replicas().await;
        assert_eq!(a.windows().len(), 1, "two replicas starting at once made one key: {:?}", a.windows());
        assert_eq!(a.signer(at(1)).unwrap().kid, b.signer(at(1)).unwrap().kid, "and both sign with it");
        // Within a day of the end of its window, both refresh at once: one successor.
        let (ra, rb) = tokio::join!(a.refresh(at(700)), b.refresh(at(700)));
        ra.expect("refresh a");
        rb.expect("refresh b");
        b.refresh(at(700)).await.expect("b reads what a made");
        assert_eq!(a.windows().len(), 2, "one successor: {:?}", a.windows());
        assert_eq!(a.windows(), b.windows(), "both replicas hold the same keys");
        let old = a.signer(at(700)).unwrap();
        let new = a.signer(at(720)).unwrap();
        assert_ne!(old.kid, new.kid, "the successor signs once the window ends");
        assert!(b.verifier(&new.kid, at(700)).is_some(), "published ahead: verifiers know it before it signs");
        assert!(b.verifier(&old.kid, at(727)).is_some(), "the old key verifies through its overlap");
        assert!(b.verifier(&old.kid, at(729)).is_none(), "and not after");
        assert_eq!(a.jwks(at(700)).len(), 2, "the JWKS lists both");
    }

    #[tokio::test]
    async fn keys_sealed_in_the_store_never_appear_in_it_in_the_clear() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open_sqlite(&dir.path().join("hourglass.db")).await.expect("a store");
        let store_key = Arc::new(StoreKey::from_bytes(&[3; 32]).expect("a store key"));
        let set = KeySet::open(store.clone(), store_key, KeyPurpose::GrantToken, policy(), None, at(0)).await.unwrap();
        let seed = set.signer(at(1)).unwrap().seed();
        let stored = store.signing_keys("grant_token").await.unwrap();
        assert_eq!(stored.len(), 1);
        let raw = base64::engine::general_purpose::STANDARD.encode(seed.as_ref());
        assert!(!stored[0].sealed_private.contains(&raw), "the seed is sealed");
        let file = std::fs::read(dir.path().join("hourglass.db")).unwrap();
        assert!(!file.windows(32).any(|w| w == seed.as_ref()), "nowhere in the store's file");
        // Another store key cannot open it: a clear error naming the file to share.
        let other = Arc::new(StoreKey::from_bytes(&[4; 32]).expect("another key"));
        let error = KeySet::open(store, other, KeyPurpose::GrantToken, policy(), None, at(1)).await.err().unwrap();
        assert!(error.to_string().contains("store_key_file"), "{error}");
    }

    #[test]
    fn keys_purposes_read_back_from_their_names() {
        for purpose in [KeyPurpose::Session, KeyPurpose::GrantToken, KeyPurpose::SshUserCa] {
            assert_eq!(KeyPurpose::parse(purpose.as_str()), Some(purpose));
        }
        assert_eq!(KeyPurpose::parse("grant-token"), Some(KeyPurpose::GrantToken), "as typed on a command line");
        assert_eq!(KeyPurpose::parse("tls"), None);
    }
}
