//! Where STS and IAM are, and the region each is signed for.

use reqwest::Url;

use crate::credentials::Env;
use crate::error::{Error, Result};

/// The STS and IAM endpoints and their signing regions. The URLs are
/// checked when a call is made (an error naming the endpoint), so callers
/// can override them freely.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoints {
    /// The region of the broker's deployment; STS is signed for it.
    pub region: String,
    pub sts: String,
    pub iam: String,
    /// IAM is global: one endpoint per partition, signed for the
    /// partition's home region (us-east-1 in the commercial partition).
    pub iam_region: String,
}

/// The commercial, China and GovCloud partitions; the ISO partitions need
/// explicit endpoints (`Endpoints::new`).
struct Partition {
    dns_suffix: &'static str,
    iam_host: &'static str,
    iam_region: &'static str,
}

fn partition(region: &str) -> Partition {
    if region.starts_with("cn-") {
        Partition {
            dns_suffix: "amazonaws.com.cn",
            iam_host: "iam.cn-north-1.amazonaws.com.cn",
            iam_region: "cn-north-1",
        }
    } else if region.starts_with("us-gov-") {
        Partition { dns_suffix: "amazonaws.com", iam_host: "iam.us-gov.amazonaws.com", iam_region: "us-gov-west-1" }
    } else {
        Partition { dns_suffix: "amazonaws.com", iam_host: "iam.amazonaws.com", iam_region: "us-east-1" }
    }
}

impl Endpoints {
    /// Explicit endpoints (the caller's settings, an emulator); IAM's
    /// signing region follows `region`'s partition.
    pub fn new(region: &str, sts: impl Into<String>, iam: impl Into<String>) -> Endpoints {
        Endpoints {
            region: region.to_owned(),
            sts: sts.into(),
            iam: iam.into(),
            iam_region: partition(region).iam_region.to_owned(),
        }
    }

    /// As the AWS SDKs resolve them from the process environment: see
    /// [`Endpoints::resolve_from`].
    pub fn resolve(region: Option<&str>) -> Endpoints {
        Endpoints::resolve_from(&Env::process(), region)
    }

    /// The region from `region`, else `AWS_REGION`, else
    /// `AWS_DEFAULT_REGION`, else us-east-1. STS from
    /// `AWS_ENDPOINT_URL_STS`, else `AWS_ENDPOINT_URL`, else the regional
    /// endpoint (the global one is legacy); IAM likewise with
    /// `AWS_ENDPOINT_URL_IAM`, else the partition's global endpoint. A
    /// region that is no region name fails at the first call.
    pub fn resolve_from(env: &Env, region: Option<&str>) -> Endpoints {
        let region = region
            .filter(|r| !r.is_empty())
            .or_else(|| env.get("AWS_REGION"))
            .or_else(|| env.get("AWS_DEFAULT_REGION"))
            .unwrap_or("us-east-1");
        let part = partition(region);
        let pick = |service_var: &str, default: String| {
            env.get(service_var).or_else(|| env.get("AWS_ENDPOINT_URL")).map_or(default, str::to_owned)
        };
        Endpoints {
            region: region.to_owned(),
            sts: pick("AWS_ENDPOINT_URL_STS", format!("https://sts.{region}.{}", part.dns_suffix)),
            iam: pick("AWS_ENDPOINT_URL_IAM", format!("https://{}", part.iam_host)),
            iam_region: part.iam_region.to_owned(),
        }
    }

    /// The region STS is signed for: the legacy global endpoint only
    /// accepts us-east-1.
    pub(crate) fn sts_region(&self) -> &str {
        if Url::parse(&self.sts).is_ok_and(|url| url.host_str() == Some("sts.amazonaws.com")) {
            "us-east-1"
        } else {
            &self.region
        }
    }
}

/// An endpoint as a URL; `service` names it in the error.
pub(crate) fn parse_endpoint(service: &str, value: &str) -> Result<Url> {
    let invalid = |detail: String| Error::InvalidEndpoint { name: format!("for {service}"), detail };
    let url = Url::parse(value).map_err(|e| invalid(format!("{value:?}: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(invalid(format!("{value:?} is not an http(s) url")));
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_regional_sts_and_global_iam() {
        let e = Endpoints::resolve_from(&Env::from_vars([("AWS_REGION", "eu-west-3")]), None);
        assert_eq!(e.sts, "https://sts.eu-west-3.amazonaws.com");
        assert_eq!(e.iam, "https://iam.amazonaws.com");
        assert_eq!((e.region.as_str(), e.iam_region.as_str()), ("eu-west-3", "us-east-1"));
        let none = Endpoints::resolve_from(&Env::from_vars::<_, &str, &str>([]), None);
        assert_eq!(none.region, "us-east-1");
    }

    #[test]
    fn argument_beats_aws_region_beats_aws_default_region() {
        let env = Env::from_vars([("AWS_REGION", "eu-west-1"), ("AWS_DEFAULT_REGION", "eu-west-2")]);
        assert_eq!(Endpoints::resolve_from(&env, Some("ap-south-1")).region, "ap-south-1");
        assert_eq!(Endpoints::resolve_from(&env, None).region, "eu-west-1");
        let env = Env::from_vars([("AWS_DEFAULT_REGION", "eu-west-2")]);
        assert_eq!(Endpoints::resolve_from(&env, None).region, "eu-west-2");
    }

    #[test]
    fn china_and_govcloud_have_their_own_partitions() {
        let cn = Endpoints::resolve_from(&Env::default(), Some("cn-northwest-1"));
        assert_eq!(cn.sts, "https://sts.cn-northwest-1.amazonaws.com.cn");
        assert_eq!(cn.iam, "https://iam.cn-north-1.amazonaws.com.cn");
        assert_eq!(cn.iam_region, "cn-north-1");
        let gov = Endpoints::resolve_from(&Env::default(), Some("us-gov-east-1"));
        assert_eq!(gov.iam, "https://iam.us-gov.amazonaws.com");
        assert_eq!(gov.iam_region, "us-gov-west-1");
    }

    #[test]
    fn endpoint_variables_override_per_service_first() {
        let env = Env::from_vars([
            ("AWS_ENDPOINT_URL", "http://127.0.0.1:5000"),
            ("AWS_ENDPOINT_URL_STS", "http://127.0.0.1:6000"),
        ]);
        let e = Endpoints::resolve_from(&env, None);
        assert_eq!(e.sts, "http://127.0.0.1:6000");
        assert_eq!(e.iam, "http://127.0.0.1:5000");
        let error = parse_endpoint("iam", "iam.local").unwrap_err();
        assert!(error.to_string().starts_with("invalid aws endpoint for iam: \"iam.local\""), "{error}");
        assert!(parse_endpoint("sts", "ftp://x").is_err());
    }
}
