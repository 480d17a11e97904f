//! Who the caller is and what they may do: tokens, ownership, `generalAccess`, and the HMAC
//! signatures of Apify's public URLs (§4 of the reference), bit for bit.

use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::model::{Authenticated, GeneralAccess, ShareAccess, StoreInfo, User};

/// How long the signature in a store's `keysPublicUrl`/`recordsPublicUrl` is valid (Apify: 14 days).
pub const PUBLIC_URL_SIGNATURE_TTL_MS: u64 = 14 * 24 * 3600 * 1000;

/// The authenticated user, if any, and whether its token may only read. A request with an
/// invalid token (or one of a disabled user) never gets this far.
#[derive(Debug, Clone, Default)]
pub struct Caller {
    user: Option<User>,
    read_only: bool,
}

impl Caller {
    pub fn anonymous() -> Self {
        Self::default()
    }

    pub fn authenticated(who: Authenticated) -> Self {
        Self {
            user: Some(who.user),
            read_only: who.read_only,
        }
    }

    pub fn user(&self) -> Option<&User> {
        self.user.as_ref()
    }

    /// The token may read but not write (anything, its owner's stores included).
    pub fn read_only(&self) -> bool {
        self.read_only
    }
}

/// What a caller may do with one store, each level including the ones below it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Access {
    None,
    /// The store object, its keys and records.
    Read,
    /// Also put and delete records (a `WRITE` share).
    Write,
    /// Also rename, delete and share the store, and change its `generalAccess` (the owner, an
    /// administrator).
    Manage,
}

/// How the store was named in the request; `ANYONE_WITH_ID_CAN_READ` opens only the first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReachedBy {
    Id,
    Name,
}

/// Whether the caller's share of `store` can count: only for a signed-in caller who is not its
/// owner. Where it cannot, the share need not be looked up; [`access`] ignores it anyway (the
/// storage layer hands over whatever share it finds).
pub fn share_counts(caller: &Caller, store: &StoreInfo) -> bool {
    caller.user().is_some_and(|u| u.id != store.user_id)
}

/// The access a caller has to a store, before any signature is considered: the owner and
/// administrators manage it, a share gives what it says, `generalAccess` may let anyone read; the
/// store of a disabled owner answers administrators only; a read-only token never writes.
pub fn access(
    caller: &Caller,
    store: &StoreInfo,
    reached_by: ReachedBy,
    user_default: GeneralAccess,
    shared: Option<ShareAccess>,
) -> Access {
    let user = caller.user();
    // A read-only token of an administrator is no administrator's token.
    let is_admin = user.is_some_and(|u| u.is_admin) && !caller.read_only();
    let granted = if is_admin || user.is_some_and(|u| u.id == store.user_id) {
        Access::Manage
    } else if store.owner_disabled {
        Access::None
    } else {
        let general = match store.general_access {
            GeneralAccess::FollowUserSetting => user_default,
            other => other,
        };
        let by_general = match (general, reached_by) {
            (GeneralAccess::AnyoneWithNameCanRead, _)
            | (GeneralAccess::AnyoneWithIdCanRead, ReachedBy::Id) => Access::Read,
            (GeneralAccess::AnyoneWithIdCanRead, ReachedBy::Name)
            | (GeneralAccess::Restricted, _)
            | (GeneralAccess::FollowUserSetting, _) => Access::None,
        };
        let by_share = match shared.filter(|_| share_counts(caller, store)) {
            Some(ShareAccess::Write) => Access::Write,
            Some(ShareAccess::Read) => Access::Read,
            None => Access::None,
        };
        by_general.max(by_share)
    };
    if caller.read_only() {
        granted.min(Access::Read)
    } else {
        granted
    }
}

type HmacSha256 = Hmac<Sha256>;

const BASE62: &[u8; 62] = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";

/// Apify's `createHmacSignature`: HMAC-SHA256, the first 30 hex digits as an integer, in base62.
pub fn create_hmac_signature(secret: &str, message: &str) -> String {
    Signer::new(secret).sign(message)
}

/// Signs any number of messages with one secret: the HMAC key schedule runs once, not per message
/// (a key listing signs up to 1000 record URLs).
#[derive(Clone)]
pub struct Signer(Option<HmacSha256>);

impl Signer {
    pub fn new(secret: &str) -> Self {
        // HMAC accepts keys of any length, so this cannot fail.
        Signer(HmacSha256::new_from_slice(secret.as_bytes()).ok())
    }

    /// [`create_hmac_signature`] of `message` with this signer's secret.
    pub fn sign(&self, message: &str) -> String {
        let mut out = Vec::with_capacity(MAX_SIGNATURE_LEN);
        self.sign_into(message, &mut out);
        // Base62 digits are ASCII.
        String::from_utf8(out).unwrap_or_default()
    }

    /// [`Self::sign`], appended to `out`: a key listing writes 1000 signatures into its JSON
    /// without a `String` for each.
    pub fn sign_into(&self, message: &str, out: &mut Vec<u8>) {
        let Some(keyed) = &self.0 else {
            return;
        };
        let mut mac = keyed.clone();
        mac.update(message.as_bytes());
        let digest = mac.finalize().into_bytes();
        // 30 hex digits = the first 15 bytes = 120 bits.
        let n = digest[..15]
            .iter()
            .fold(0u128, |acc, b| (acc << 8) | u128::from(*b));
        let mut digits = [0u8; BASE62_BUF];
        out.extend_from_slice(base62(n, &mut digits));
    }
}

/// 2^120 < 62^21: a signature has at most 21 digits.
const MAX_SIGNATURE_LEN: usize = 21;
const DIGITS_PER_CHUNK: usize = 10;
/// Three chunks of 10 digits hold any u128 (2^128 < 62^22; the top chunk has at most two digits).
const BASE62_BUF: usize = 3 * DIGITS_PER_CHUNK;

/// `n` in base62 without leading zeros, written into the end of `digits`. 128-bit division is a
/// library call, so `n` is split into three chunks of 10 digits by two of them and each chunk is
/// converted in 64 bits.
fn base62(n: u128, digits: &mut [u8; BASE62_BUF]) -> &[u8] {
    const CHUNK: u128 = 62u128.pow(DIGITS_PER_CHUNK as u32);
    let mut rest = n;
    for chunk in digits.rchunks_mut(DIGITS_PER_CHUNK) {
        let mut part = (rest % CHUNK) as u64;
        rest /= CHUNK;
        for digit in chunk.iter_mut().rev() {
            *digit = BASE62[(part % 62) as usize];
            part /= 62;
        }
    }
    let first = digits
        .iter()
        .position(|&d| d != b'0')
        .unwrap_or(digits.len() - 1);
    &digits[first..]
}

/// The signature of one record's public URL. It never expires.
pub fn record_signature(secret: &str, key: &str) -> String {
    create_hmac_signature(secret, key)
}

/// Whether a record signature for `key` would also be a storage signature's HMAC for the store
/// `store_id`: both are `createHmacSignature` with the same secret, and a storage signature signs
/// `0.<expiresAt>.<storeId>`. Such a key's record signature is never accepted or handed out, so
/// that it cannot be turned into a storage signature (and none can be read as a record signature).
pub fn key_spells_storage_message(key: &str, store_id: &str) -> bool {
    key.strip_prefix("0.")
        .and_then(|rest| rest.strip_suffix(store_id))
        .and_then(|rest| rest.strip_suffix('.'))
        .is_some_and(|expires| !expires.is_empty() && expires.bytes().all(|b| b.is_ascii_digit()))
}

/// The storage-content signature that opens a store's key listing and records ZIP.
/// `expires_at_ms == 0` means it never expires.
pub fn storage_signature(secret: &str, store_id: &str, expires_at_ms: u64) -> String {
    let hmac = create_hmac_signature(secret, &format!("0.{expires_at_ms}.{store_id}"));
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("0.{expires_at_ms}.{hmac}"))
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("The signature is malformed.")]
    Malformed,
    #[error("The signature is not valid for this resource.")]
    Mismatch,
    #[error("The signature has expired.")]
    Expired,
}

fn same(a: &str, b: &str) -> bool {
    a.as_bytes().ct_eq(b.as_bytes()).into()
}

pub fn verify_record_signature(
    secret: &str,
    key: &str,
    signature: &str,
) -> Result<(), SignatureError> {
    if same(&record_signature(secret, key), signature) {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

/// Checks a storage signature; both padded (Python) and unpadded (JS) base64url are accepted.
pub fn verify_storage_signature(
    secret: &str,
    store_id: &str,
    signature: &str,
    now_ms: u64,
) -> Result<(), SignatureError> {
    let decoded = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(signature.trim_end_matches('='))
        .map_err(|_| SignatureError::Malformed)?;
    let decoded = String::from_utf8(decoded).map_err(|_| SignatureError::Malformed)?;
    let mut parts = decoded.splitn(3, '.');
    let (Some(version), Some(expires_at), Some(hmac)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(SignatureError::Malformed);
    };
    // Digits only (no sign): the message signed is exactly `0.<digits>.<storeId>`, the shape
    // `key_spells_storage_message` keeps record signatures away from.
    if version != "0" || expires_at.is_empty() || !expires_at.bytes().all(|b| b.is_ascii_digit()) {
        return Err(SignatureError::Malformed);
    }
    let expires: u64 = expires_at.parse().map_err(|_| SignatureError::Malformed)?;
    let expected = create_hmac_signature(secret, &format!("0.{expires_at}.{store_id}"));
    if !same(&expected, hmac) {
        return Err(SignatureError::Mismatch);
    }
    if expires != 0 && expires < now_ms {
        return Err(SignatureError::Expired);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Base62 by repeated 128-bit division, digit by digit, as Apify's `encodeBase62`.
    fn slow_base62(mut n: u128) -> String {
        if n == 0 {
            return "0".to_owned();
        }
        let mut out = Vec::new();
        while n > 0 {
            out.push(BASE62[(n % 62) as usize]);
            n /= 62;
        }
        out.reverse();
        String::from_utf8(out).unwrap()
    }

    /// `createHmacSignature` as Apify's JS spells it: a fresh HMAC per message, its hex digest cut
    /// to 30 digits, read as an integer, in base62.
    fn reference_signature(secret: &str, message: &str) -> String {
        let mut mac = HmacSha256::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(message.as_bytes());
        let hex = hex::encode(mac.finalize().into_bytes());
        slow_base62(u128::from_str_radix(&hex[..30], 16).unwrap())
    }

    #[test]
    fn base62_matches_repeated_division() {
        let mut samples = vec![
            0,
            1,
            61,
            62,
            63,
            62u128.pow(10) - 1,
            62u128.pow(10),
            u128::MAX,
        ];
        samples.extend(
            (0..1000u128).map(|i| i.wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835)),
        );
        for n in samples {
            let mut digits = [0u8; BASE62_BUF];
            assert_eq!(base62(n, &mut digits), slow_base62(n).as_bytes(), "{n}");
        }
    }

    #[test]
    fn one_keyed_signer_signs_as_a_fresh_hmac_per_message() {
        let long_secret = "k".repeat(100); // longer than a SHA-256 block: hashed first
        let long_key = "x".repeat(256);
        let secrets = [
            "hmac-secret-key",
            "",
            "Ab3dEf6hIj9kLm2nOp5q",
            long_secret.as_str(),
        ];
        let keys = [
            "INPUT",
            "",
            "k00000042",
            "a\"b\\c\n",
            "žluťoučký kůň 🐎",
            "0.1700000000000.WkzbQMuFYuamGv3YF",
            "%2F..%2Fescaped%20key",
            long_key.as_str(),
        ];
        for secret in secrets {
            let signer = Signer::new(secret);
            // Appended after what the buffer holds, as a listing writes it.
            let mut out = b"prefix".to_vec();
            for key in keys {
                let expected = reference_signature(secret, key);
                assert_eq!(signer.sign(key), expected, "{secret:?} {key:?}");
                assert_eq!(create_hmac_signature(secret, key), expected);
                assert_eq!(record_signature(secret, key), expected);
                out.truncate(6);
                signer.sign_into(key, &mut out);
                assert_eq!(&out[..6], b"prefix");
                assert_eq!(&out[6..], expected.as_bytes(), "{secret:?} {key:?}");
                assert!(out.len() - 6 <= MAX_SIGNATURE_LEN);
            }
        }
    }

    // The worked examples of §4 of the reference.
    #[test]
    fn hmac_signature_matches_apify_shared_js() {
        assert_eq!(
            create_hmac_signature("hmac-secret-key", "hmac-message-to-be-authenticated"),
            "pcVagAsudj8dFqdlg7mG"
        );
        assert_eq!(
            create_hmac_signature(
                "hmac-same-secret-key",
                "hmac-same-message-to-be-authenticated"
            ),
            "FYMcmTIm3idXqleF1Sw5"
        );
        assert_eq!(
            create_hmac_signature("hmac-secret-key", "INPUT"),
            "126LysVkMQ2fTk8WTp14h"
        );
    }

    #[test]
    fn storage_signature_matches_apify_shared_js() {
        assert_eq!(
            storage_signature("hmac-secret-key", "resource-id", 0),
            "MC4wLjNUd2ZFRTY1OXVmU05zbVM0N2xS"
        );
        assert_eq!(
            storage_signature("hmac-secret-key", "WkzbQMuFYuamGv3YF", 1_700_000_000_000),
            "MC4xNzAwMDAwMDAwMDAwLjRFWHNjbEQyaGVCSkIwdHlIQmM0"
        );
    }

    #[test]
    fn storage_signatures_verify_with_and_without_padding() {
        let sig = storage_signature("s3cret", "WkzbQMuFYuamGv3YF", 0);
        assert_eq!(
            verify_storage_signature("s3cret", "WkzbQMuFYuamGv3YF", &sig, 1),
            Ok(())
        );
        let padded = format!("{sig}{}", "=".repeat((4 - sig.len() % 4) % 4));
        assert_eq!(
            verify_storage_signature("s3cret", "WkzbQMuFYuamGv3YF", &padded, 1),
            Ok(())
        );
        assert_eq!(
            verify_storage_signature("s3cret", "otherStoreIdXXXXX", &sig, 1),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify_storage_signature("wrong", "WkzbQMuFYuamGv3YF", &sig, 1),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify_storage_signature("s3cret", "WkzbQMuFYuamGv3YF", "not base64 !!", 1),
            Err(SignatureError::Malformed)
        );
    }

    #[test]
    fn expired_storage_signatures_are_refused() {
        let sig = storage_signature("s3cret", "WkzbQMuFYuamGv3YF", 1_000);
        assert_eq!(
            verify_storage_signature("s3cret", "WkzbQMuFYuamGv3YF", &sig, 999),
            Ok(())
        );
        assert_eq!(
            verify_storage_signature("s3cret", "WkzbQMuFYuamGv3YF", &sig, 1_001),
            Err(SignatureError::Expired)
        );
    }

    #[test]
    fn keys_that_spell_a_storage_message_are_recognised() {
        let id = "WkzbQMuFYuamGv3YF";
        for key in [
            format!("0.0.{id}"),
            format!("0.1700000000000.{id}"),
            format!("0.00.{id}"),
        ] {
            assert!(key_spells_storage_message(&key, id), "{key}");
            // The attack: the record signature of such a key is a storage signature's HMAC.
            let forged = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!(
                "{}.{}",
                key.rsplit_once('.').unwrap().0,
                record_signature("s3cret", &key)
            ));
            assert_eq!(verify_storage_signature("s3cret", id, &forged, 1), Ok(()));
        }
        for key in [
            "INPUT".to_owned(),
            format!("0..{id}"),
            format!("0.x.{id}"),
            format!("1.0.{id}"),
            format!("0.0.{id}x"),
            "0.0.otherStoreIdXXXXX".to_owned(),
            format!("0.0.{}", &id[1..]),
        ] {
            assert!(!key_spells_storage_message(&key, id), "{key}");
        }
    }

    #[test]
    fn storage_signatures_need_a_digits_only_expiry() {
        let id = "WkzbQMuFYuamGv3YF";
        let hmac = create_hmac_signature("s3cret", &format!("0.+5.{id}"));
        let signature =
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("0.+5.{hmac}"));
        assert_eq!(
            verify_storage_signature("s3cret", id, &signature, 1),
            Err(SignatureError::Malformed)
        );
    }

    #[test]
    fn record_signatures_verify() {
        let sig = record_signature("s3cret", "INPUT");
        assert!(verify_record_signature("s3cret", "INPUT", &sig).is_ok());
        assert!(verify_record_signature("s3cret", "OUTPUT", &sig).is_err());
    }
}
