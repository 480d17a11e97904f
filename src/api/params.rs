//! Query parameters: the raw query as an extractor ([`Params`]), its grammar (empty = absent,
//! repeated = error, numbers as doubles, booleans as both clients send them), and each
//! endpoint's typed set of parameters. Parsed by hand so that every bad value gets Apify's error
//! envelope (400 `invalid-parameter`) rather than a framework rejection.
//!
//! The typed sets are parsed by the handler ([`Params::parse`]) rather than by an extractor: Apify
//! answers a missing token, a forbidden or missing store before a bad parameter, so a handler
//! parses them only after those checks.

use std::convert::Infallible;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;

use crate::error::{ApiError, ApiResult};
use crate::model::StoreName;

/// The listings' page size: the default and the maximum.
pub const MAX_LIMIT: u64 = 1000;
/// The largest integer a double holds exactly (JavaScript's `Number.MAX_SAFE_INTEGER`): numbers the
/// API echoes back never exceed it.
pub const MAX_SAFE_INTEGER: u64 = (1 << 53) - 1;

/// The request's query string, split into name/value pairs (never fails: bad values are found
/// when a parameter is read).
pub struct Params(Vec<(String, String)>);

impl<S: Send + Sync> FromRequestParts<S> for Params {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Infallible> {
        Ok(Params::from_query(parts.uri.query()))
    }
}

/// A typed set of query parameters, read from [`Params`].
pub trait FromParams: Sized {
    fn from_params(params: &Params) -> ApiResult<Self>;
}

impl Params {
    /// The typed parameters `T`; their first bad value is the error.
    pub fn parse<T: FromParams>(&self) -> ApiResult<T> {
        T::from_params(self)
    }

    pub fn from_query(query: Option<&str>) -> Self {
        Self(
            form_urlencoded::parse(query.unwrap_or("").as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        )
    }

    /// The value of `name`; an empty value counts as absent; a repeated parameter is an error.
    pub fn get(&self, name: &str) -> ApiResult<Option<&str>> {
        let mut values = self
            .0
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str());
        let first = values.next();
        if values.next().is_some() {
            return Err(ApiError::InvalidParameter(format!(
                "Parameter \"{name}\" may be given only once."
            )));
        }
        Ok(first.filter(|v| !v.is_empty()))
    }

    /// Booleans as the clients send them: `1`/`0` (JS) or `true`/`false` (Python).
    pub fn bool(&self, name: &str) -> ApiResult<bool> {
        match self.get(name)? {
            None => Ok(false),
            Some(v) if v == "1" || v.eq_ignore_ascii_case("true") => Ok(true),
            Some(v) if v == "0" || v.eq_ignore_ascii_case("false") => Ok(false),
            Some(v) => Err(ApiError::InvalidParameter(format!(
                "Parameter \"{name}\" must be a boolean (true, false, 1 or 0), got \"{}\".",
                shorten(v)
            ))),
        }
    }

    /// A non-negative number (`offset`, `limit`: Apify types them `double`), in decimal or exponent
    /// notation (`10`, `10.0`, `1e2`); a fraction is truncated and anything above
    /// [`MAX_SAFE_INTEGER`] counts as it, so that every number echoed back stays exact in a JSON
    /// parser that uses doubles. Negatives, NaN, infinities and other text are refused.
    pub fn u64(&self, name: &str) -> ApiResult<Option<u64>> {
        self.get(name)?
            .map(|v| {
                non_negative_number(v).ok_or_else(|| {
                    ApiError::InvalidParameter(format!(
                        "Parameter \"{name}\" must be a non-negative number, got \"{}\".",
                        shorten(v)
                    ))
                })
            })
            .transpose()
    }

    /// `limit` of both listings: missing or 0 means the maximum; larger values are clamped.
    pub fn limit(&self) -> ApiResult<u64> {
        Ok(match self.u64("limit")? {
            None | Some(0) => MAX_LIMIT,
            Some(n) => n.min(MAX_LIMIT),
        })
    }
}

// ---- each endpoint's parameters -----------------------------------------------------------------

/// `?ownership=` of the store listing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ownership {
    /// Absent: the caller's own stores and those shared with it.
    Both,
    OwnedByMe,
    SharedWithMe,
}

/// `GET /v2/key-value-stores`.
#[derive(Debug)]
pub struct StoreListParams {
    pub offset: u64,
    pub limit: u64,
    pub desc: bool,
    pub unnamed: bool,
    pub ownership: Ownership,
}

impl FromParams for StoreListParams {
    fn from_params(params: &Params) -> ApiResult<Self> {
        let offset = params.u64("offset")?.unwrap_or(0);
        let limit = params.limit()?;
        let desc = params.bool("desc")?;
        let unnamed = params.bool("unnamed")?;
        let ownership = match params.get("ownership")? {
            None => Ownership::Both,
            Some("ownedByMe") => Ownership::OwnedByMe,
            Some("sharedWithMe") => Ownership::SharedWithMe,
            Some(other) => {
                return Err(ApiError::InvalidParameter(format!(
                "Parameter \"ownership\" must be \"ownedByMe\" or \"sharedWithMe\", got \"{}\".",
                shorten(other)
            )))
            }
        };
        Ok(Self {
            offset,
            limit,
            desc,
            unnamed,
            ownership,
        })
    }
}

/// `POST /v2/key-value-stores`: the name of the store to get or create; absent for an unnamed one.
#[derive(Debug)]
pub struct StoreCreateParams {
    pub name: Option<StoreName>,
}

impl FromParams for StoreCreateParams {
    fn from_params(params: &Params) -> ApiResult<Self> {
        let name = params
            .get("name")?
            .map(StoreName::parse)
            .transpose()
            .map_err(|e| ApiError::InvalidParameter(e.0))?;
        Ok(Self { name })
    }
}

/// `?prefix=` and `?collection=`: which keys a key listing or a records ZIP covers.
#[derive(Debug)]
pub struct KeyFilterParams {
    /// Empty when absent.
    pub prefix: String,
    pub collection: Option<String>,
}

impl FromParams for KeyFilterParams {
    fn from_params(params: &Params) -> ApiResult<Self> {
        let prefix = params.get("prefix")?.unwrap_or("").to_owned();
        let collection = params.get("collection")?.map(str::to_owned);
        Ok(Self { prefix, collection })
    }
}

/// `GET …/keys`.
#[derive(Debug)]
pub struct KeyListParams {
    pub limit: u64,
    pub exclusive_start_key: Option<String>,
    pub filter: KeyFilterParams,
}

impl FromParams for KeyListParams {
    fn from_params(params: &Params) -> ApiResult<Self> {
        let limit = params.limit()?;
        let exclusive_start_key = params.get("exclusiveStartKey")?.map(str::to_owned);
        let filter = params.parse()?;
        Ok(Self {
            limit,
            exclusive_start_key,
            filter,
        })
    }
}

/// `GET …/records/{key}`: `?attachment=` asks for `Content-Disposition: attachment`.
#[derive(Debug)]
pub struct RecordGetParams {
    pub attachment: bool,
}

impl FromParams for RecordGetParams {
    fn from_params(params: &Params) -> ApiResult<Self> {
        Ok(Self {
            attachment: params.bool("attachment")?,
        })
    }
}

// ---- the grammar --------------------------------------------------------------------------------

/// `s` as a number truncated to an integer and clamped to [`MAX_SAFE_INTEGER`], if it is a finite
/// non-negative number written as `[+]digits[.digits][e[+|-]digits]` (either side of the point may
/// be empty, not both).
fn non_negative_number(s: &str) -> Option<u64> {
    let unsigned = s.strip_prefix('+').unwrap_or(s);
    let (mantissa, exponent) = match unsigned.split_once(['e', 'E']) {
        Some((mantissa, exponent)) => (mantissa, Some(exponent)),
        None => (unsigned, None),
    };
    let (whole, fraction) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let digits = |part: &str| part.bytes().all(|b| b.is_ascii_digit());
    let exponent_ok = exponent.is_none_or(|e| {
        let e = e.strip_prefix(['+', '-']).unwrap_or(e);
        !e.is_empty() && digits(e)
    });
    if !(digits(whole) && digits(fraction) && (whole.len() + fraction.len()) > 0 && exponent_ok) {
        return None;
    }
    if exponent.is_none() {
        // Exact for integers of any length: no detour through a double.
        return Some(match whole.trim_start_matches('0') {
            "" => 0,
            whole => whole
                .parse::<u64>()
                .map_or(MAX_SAFE_INTEGER, |n| n.min(MAX_SAFE_INTEGER)),
        });
    }
    // The grammar above is a subset of what `f64` parses; an exponent too large parses as
    // infinity, which clamps like any other large number.
    let value = unsigned.parse::<f64>().ok()?.trunc();
    Some(if value >= MAX_SAFE_INTEGER as f64 {
        MAX_SAFE_INTEGER
    } else {
        value as u64
    })
}

pub fn shorten(s: &str) -> String {
    s.chars().take(80).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn booleans_accept_what_both_clients_send() {
        let p = Params::from_query(Some("a=1&b=0&c=true&d=false&e=TRUE&f=yes"));
        assert!(p.bool("a").unwrap());
        assert!(!p.bool("b").unwrap());
        assert!(p.bool("c").unwrap());
        assert!(!p.bool("d").unwrap());
        assert!(p.bool("e").unwrap());
        assert!(!p.bool("missing").unwrap());
        assert!(matches!(p.bool("f"), Err(ApiError::InvalidParameter(_))));
    }

    #[test]
    fn limits_are_clamped_and_validated() {
        assert_eq!(Params::from_query(None).limit().unwrap(), 1000);
        assert_eq!(Params::from_query(Some("limit=0")).limit().unwrap(), 1000);
        assert_eq!(Params::from_query(Some("limit=5")).limit().unwrap(), 5);
        assert_eq!(
            Params::from_query(Some("limit=99999999999"))
                .limit()
                .unwrap(),
            1000
        );
        for bad in ["limit=-1", "limit=abc", "limit=1&limit=2"] {
            assert!(Params::from_query(Some(bad)).limit().is_err(), "{bad}");
        }
    }

    #[test]
    fn numbers_may_be_written_as_doubles() {
        let offset = |v: &str| Params::from_query(Some(&format!("offset={v}"))).u64("offset");
        for (text, n) in [
            ("0", 0),
            ("7", 7),
            ("007", 7),
            ("10.0", 10),
            ("10.9", 10),
            ("1e2", 100),
            ("1E2", 100),
            ("1.5e1", 15),
            ("2.5e-1", 0),
            ("5.", 5),
            (".5", 0),
            ("%2B3", 3),
            ("1e-400", 0),
            ("9007199254740991", MAX_SAFE_INTEGER),
            ("9007199254740992", MAX_SAFE_INTEGER),
            ("99999999999999999999", MAX_SAFE_INTEGER),
            ("1e400", MAX_SAFE_INTEGER),
            ("123456789012345.75", 123_456_789_012_345),
        ] {
            assert_eq!(offset(text).unwrap(), Some(n), "{text}");
        }
        for bad in [
            "-1", "-0.5", "-1e2", "NaN", "nan", "inf", "Infinity", "-inf", "1e", "e5", ".",
            "1.2.3", "0x10", "1_000", " 1", "1 ", "abc", "1e2.5", "++1", "1e+-2",
        ] {
            assert!(
                matches!(offset(bad), Err(ApiError::InvalidParameter(_))),
                "{bad}"
            );
        }
        assert_eq!(Params::from_query(Some("limit=10.0")).limit().unwrap(), 10);
        assert_eq!(Params::from_query(Some("limit=0.5")).limit().unwrap(), 1000);
        assert_eq!(Params::from_query(Some("limit=1e9")).limit().unwrap(), 1000);
    }

    #[test]
    fn typed_sets_read_the_same_grammar() {
        let list: StoreListParams =
            Params::from_query(Some("offset=2.5&desc=1&ownership=sharedWithMe"))
                .parse()
                .unwrap();
        assert_eq!(list.offset, 2);
        assert_eq!(list.limit, MAX_LIMIT);
        assert!(list.desc && !list.unnamed);
        assert_eq!(list.ownership, Ownership::SharedWithMe);
        let both: StoreListParams = Params::from_query(Some("ownership=")).parse().unwrap();
        assert_eq!(both.ownership, Ownership::Both);
        for bad in ["ownership=mine", "desc=yes", "offset=1&offset=2"] {
            let parsed = Params::from_query(Some(bad)).parse::<StoreListParams>();
            assert!(
                matches!(parsed, Err(ApiError::InvalidParameter(_))),
                "{bad}"
            );
        }
        let keys: KeyListParams = Params::from_query(Some("limit=5&prefix=a&exclusiveStartKey="))
            .parse()
            .unwrap();
        assert_eq!(keys.limit, 5);
        assert_eq!(keys.exclusive_start_key, None);
        assert_eq!(keys.filter.prefix, "a");
        assert!(Params::from_query(Some("name=-bad"))
            .parse::<StoreCreateParams>()
            .is_err());
    }
}
