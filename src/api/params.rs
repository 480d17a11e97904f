//! Query parameters, parsed by hand so that every bad value gets Apify's error envelope
//! (400 `invalid-parameter`) rather than a framework rejection.

use crate::error::{ApiError, ApiResult};

/// The listings' page size: the default and the maximum.
pub const MAX_LIMIT: u64 = 1000;

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

    /// A non-negative integer; one too large for 64 bits counts as the largest (limits are clamped
    /// anyway, and no offset is that large).
    pub fn u64(&self, name: &str) -> ApiResult<Option<u64>> {
        self.get(name)?
            .map(|v| match v.parse::<u64>() {
                Ok(n) => Ok(n),
                Err(_) if v.bytes().all(|b| b.is_ascii_digit()) => Ok(u64::MAX),
                Err(_) => Err(ApiError::InvalidParameter(format!(
                    "Parameter \"{name}\" must be a non-negative integer, got \"{}\".",
                    shorten(v)
                ))),
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
        for bad in ["limit=-1", "limit=abc", "limit=1.5", "limit=1&limit=2"] {
            assert!(Params::from_query(Some(bad)).limit().is_err(), "{bad}");
        }
    }
}
