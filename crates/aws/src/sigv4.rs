//! AWS Signature Version 4, as a pure function of the request, the
//! credentials and the time to sign at.
//!
//! Only what STS and IAM need: the payload is hashed (no
//! `x-amz-content-sha256`, which is S3's), and the path is encoded the
//! non-S3 way (each segment encoded once more).

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use reqwest::Url;
use ring::{digest, hmac};
use time::OffsetDateTime;
use time::macros::format_description;

use crate::credentials::Credentials;
use crate::error::{Error, Result};

/// SigV4's "URI encode": everything but the unreserved characters.
pub(crate) const UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~');

/// The parts of a request the signature covers.
pub struct Request<'a> {
    pub method: &'a str,
    pub url: &'a Url,
    /// Headers that will be sent and must be signed (besides `host` and
    /// `x-amz-date`, which `sign` adds).
    pub headers: &'a [(&'a str, &'a str)],
    pub body: &'a [u8],
}

/// The headers to add to the request: `x-amz-date`, `x-amz-security-token`
/// for temporary credentials, and `authorization`.
pub fn sign(
    request: &Request<'_>,
    service: &str,
    region: &str,
    credentials: &Credentials,
    at: OffsetDateTime,
) -> Result<Vec<(&'static str, String)>> {
    let at = at.to_offset(time::UtcOffset::UTC);
    let amz_date = at
        .format(format_description!("[year][month][day]T[hour][minute][second]Z"))
        .map_err(|e| Error::Signing(format!("formatting the signing time: {e}")))?;
    let date = &amz_date[..8];

    let host = match (request.url.host_str(), request.url.port()) {
        (Some(host), Some(port)) => format!("{host}:{port}"),
        (Some(host), None) => host.to_owned(),
        (None, _) => return Err(Error::Signing("the url has no host".into())),
    };
    let mut added: Vec<(&'static str, String)> = vec![("x-amz-date", amz_date.clone())];
    if let Some(token) = &credentials.session_token {
        added.push(("x-amz-security-token", token.to_string()));
    }

    let mut headers: Vec<(String, String)> = request
        .headers
        .iter()
        .map(|(name, value)| (name.to_ascii_lowercase(), canonical_header_value(value)))
        .chain(std::iter::once(("host".to_owned(), host)))
        .chain(added.iter().map(|(n, v)| ((*n).to_owned(), v.clone())))
        .collect();
    headers.sort();
    let signed_headers = headers.iter().map(|(name, _)| name.as_str()).collect::<Vec<_>>().join(";");
    let canonical_headers: String = headers.iter().map(|(name, value)| format!("{name}:{value}\n")).collect();

    let canonical_request = format!(
        "{}\n{}\n{}\n{}\n{}\n{}",
        request.method,
        canonical_uri(request.url),
        canonical_query(request.url),
        canonical_headers,
        signed_headers,
        hex(digest::digest(&digest::SHA256, request.body).as_ref()),
    );
    let scope = format!("{date}/{region}/{service}/aws4_request");
    let string_to_sign = format!(
        "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
        hex(digest::digest(&digest::SHA256, canonical_request.as_bytes()).as_ref())
    );

    let secret = zeroize::Zeroizing::new(format!("AWS4{}", credentials.secret_access_key.as_str()));
    let key = [date, region, service, "aws4_request"]
        .iter()
        .fold(secret.as_bytes().to_vec(), |key, part| hmac_sha256(&key, part.as_bytes()));
    let signature = hex(&hmac_sha256(&key, string_to_sign.as_bytes()));

    added.push((
        "authorization",
        format!(
            "AWS4-HMAC-SHA256 Credential={}/{scope}, SignedHeaders={signed_headers}, Signature={signature}",
            credentials.access_key_id
        ),
    ));
    Ok(added)
}

fn hmac_sha256(key: &[u8], data: &[u8]) -> Vec<u8> {
    hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), data).as_ref().to_vec()
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::new(), |mut out, b| {
        let _ = write!(out, "{b:02x}");
        out
    })
}

/// Trimmed, with runs of spaces collapsed, as the canonical form asks.
fn canonical_header_value(value: &str) -> String {
    value.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn canonical_uri(url: &Url) -> String {
    let path = url.path();
    if path.is_empty() || path == "/" {
        return "/".into();
    }
    // The path is already encoded as sent; non-S3 services want each
    // segment encoded again.
    path.split('/').map(|segment| utf8_percent_encode(segment, UNRESERVED).to_string()).collect::<Vec<_>>().join("/")
}

fn canonical_query(url: &Url) -> String {
    let mut pairs: Vec<(String, String)> = url
        .query_pairs()
        .map(|(k, v)| {
            (utf8_percent_encode(&k, UNRESERVED).to_string(), utf8_percent_encode(&v, UNRESERVED).to_string())
        })
        .collect();
    pairs.sort();
    pairs.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("&")
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;
    use zeroize::Zeroizing;

    fn example_credentials(token: Option<&str>) -> Credentials {
        Credentials {
            access_key_id: "AKIDEXAMPLE".into(),
            secret_access_key: Zeroizing::new("wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".into()),
            session_token: token.map(|t| Zeroizing::new(t.to_owned())),
            expiration: None,
        }
    }

    fn header<'a>(headers: &'a [(&'static str, String)], name: &str) -> Option<&'a str> {
        headers.iter().find(|(n, _)| *n == name).map(|(_, v)| v.as_str())
    }

    /// The example in AWS's "Create a signed AWS API request" guide: IAM
    /// ListUsers as a GET, signed at 2015-08-30T12:36:00Z.
    #[test]
    fn reproduces_the_aws_documented_iam_list_users_signature() {
        let url = Url::parse("https://iam.amazonaws.com/?Action=ListUsers&Version=2010-05-08").unwrap();
        let request = Request {
            method: "GET",
            url: &url,
            headers: &[("Content-Type", "application/x-www-form-urlencoded; charset=utf-8")],
            body: b"",
        };
        let headers =
            sign(&request, "iam", "us-east-1", &example_credentials(None), datetime!(2015-08-30 12:36:00 UTC)).unwrap();
        assert_eq!(header(&headers, "x-amz-date"), Some("20150830T123600Z"));
        assert_eq!(header(&headers, "x-amz-security-token"), None);
        assert_eq!(
            header(&headers, "authorization"),
            Some(
                "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/iam/aws4_request, \
                 SignedHeaders=content-type;host;x-amz-date, \
                 Signature=5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7"
            )
        );
    }

    #[test]
    fn session_token_is_sent_and_signed() {
        let url = Url::parse("https://sts.us-east-1.amazonaws.com/").unwrap();
        let body = b"Action=GetCallerIdentity&Version=2011-06-15";
        let request = Request {
            method: "POST",
            url: &url,
            headers: &[("content-type", "application/x-www-form-urlencoded; charset=utf-8")],
            body,
        };
        let at = datetime!(2015-08-30 12:36:00 UTC);
        let with = sign(&request, "sts", "us-east-1", &example_credentials(Some("TOKEN")), at).unwrap();
        let without = sign(&request, "sts", "us-east-1", &example_credentials(None), at).unwrap();
        assert_eq!(header(&with, "x-amz-security-token"), Some("TOKEN"));
        let auth = header(&with, "authorization").unwrap();
        assert!(auth.contains("SignedHeaders=content-type;host;x-amz-date;x-amz-security-token,"), "{auth}");
        // The token is covered: another token gives another signature.
        let other = sign(&request, "sts", "us-east-1", &example_credentials(Some("OTHER")), at).unwrap();
        assert_ne!(header(&other, "authorization"), Some(auth));
        assert_ne!(header(&without, "authorization"), Some(auth));
        assert!(!auth.contains("wJalrXUtnFEMI"));
    }

    #[test]
    fn canonical_forms_encode_and_sort() {
        let url = Url::parse("http://127.0.0.1:5000/a%20b/c?b=2&a=x y&a=1").unwrap();
        assert_eq!(canonical_uri(&url), "/a%2520b/c");
        assert_eq!(canonical_query(&url), "a=1&a=x%20y&b=2");
        assert_eq!(canonical_header_value("  a   b "), "a b");
    }
}
