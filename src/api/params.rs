//! Query parameters, parsed by hand so that every bad value gets Apify's error envelope
//! (400 `invalid-parameter`) rather than a framework rejection.

use crate::error::{ApiError, ApiResult};

/// The listings' page size: the default and the maximum.
pub const MAX_LIMIT: u64 = 1000;
/// The largest integer a double holds exactly (JavaScript's `Number.MAX_SAFE_INTEGER`): numbers the
/// API echoes back never exceed it.
pub const MAX_SAFE_INTEGER: u64 = (1 << 53) - 1;

pub struct Params(Vec<(String, String)>);

impl Params {
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
}
