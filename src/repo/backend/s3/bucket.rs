//! Creating a missing bucket, for `init`: the one request platter needs
//! that opendal's S3 service lacks (0.59 handles objects only: no
//! CreateBucket, and no way to send a signed request of one's own).
//!
//! Nothing here signs by hand: the request is signed by reqsign's AWS v4
//! signer, the crate opendal's S3 service signs every request with, from
//! the same credentials, and sent through the same HTTP transport as every
//! other request of the repository (its TLS roots, and a failed TLS
//! handshake named as such). It is tried once: `init` reached the store a
//! moment before, to learn that the bucket is missing.

use opendal::{Buffer, HttpTransporter};
use reqsign_aws_v4::{Credential, RequestSigner, StaticCredentialProvider};
use reqsign_core::{Context, Signer};

use super::{S3Location, classify, region_hint, runtime};
use crate::error::{Error, ErrorKind, Result};

/// What a CreateBucket request needs besides the bucket's name.
pub(super) struct BucketMaker {
    signer: Signer<Credential>,
    transport: HttpTransporter,
    region: String,
    /// Kept out of the store's messages, which name it: they say
    /// AWS_ACCESS_KEY_ID instead (`init` takes its credentials from there).
    key: String,
}

impl BucketMaker {
    pub(super) fn new(
        key: &str,
        secret: &str,
        region: &str,
        transport: HttpTransporter,
    ) -> BucketMaker {
        BucketMaker {
            signer: Signer::new(
                Context::new(),
                StaticCredentialProvider::new(key, secret),
                RequestSigner::new("s3", region),
            ),
            transport,
            region: region.to_string(),
            key: key.to_string(),
        }
    }

    /// Creates `location`'s bucket. `false` if it was there already (made
    /// by this key meanwhile: another `init` at the same moment).
    pub(super) fn create(&self, location: &S3Location) -> Result<bool> {
        check_name(location)?;
        let url = format!("{}/{}", location.endpoint, location.bucket);
        // us-east-1 is the default location, which must not be named; any
        // other region is, or AWS refuses the request.
        let body = if self.region == "us-east-1" {
            String::new()
        } else {
            format!(
                "<CreateBucketConfiguration xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">\
                 <LocationConstraint>{}</LocationConstraint></CreateBucketConfiguration>",
                self.region
            )
        };
        let cannot = |why: String| {
            Error::new(
                ErrorKind::Io,
                format!(
                    "cannot create the bucket {} at {}: {why}",
                    location.bucket, location.endpoint
                ),
            )
        };
        let request = http::Request::put(url.as_str())
            .header(http::header::CONTENT_LENGTH, body.len())
            .body(Buffer::from(body.into_bytes()))
            .map_err(|e| cannot(e.to_string()))?;
        let (mut parts, body) = request.into_parts();
        let answer = runtime()?.block_on(async {
            self.signer
                .sign(&mut parts, None)
                .await
                .map_err(|e| cannot(format!("the request could not be signed: {e}")))?;
            // As opendal does: the transport sets Host for the HTTP version.
            parts.headers.remove(http::header::HOST);
            self.transport
                .send(http::Request::from_parts(parts, body))
                .await
                .map_err(|e| classify(location, "create the bucket", &url, e))
        })?;
        let status = answer.status();
        if status.is_success() {
            return Ok(true);
        }
        let text = String::from_utf8_lossy(&answer.body().to_bytes()).into_owned();
        let code = element(&text, "Code").unwrap_or_default();
        let said = element(&text, "Message")
            .unwrap_or(status.as_str())
            .replace(&self.key, "AWS_ACCESS_KEY_ID");
        Err(match (status.as_u16(), code) {
            (409, "BucketAlreadyOwnedByYou") => return Ok(false),
            (403, _) => Error::not_found(format!(
                "the bucket {} does not exist at {}, and these credentials may not create it \
                 ({said})",
                location.bucket, location.endpoint
            ))
            .hint(format!(
                "create the bucket {} (with the store's own tools or console), or run init \
                 with credentials that may create buckets; nothing was written",
                location.bucket
            )),
            (409, _) => Error::bad_input(format!(
                "the bucket name {} is taken at {} by someone else ({said})",
                location.bucket, location.endpoint
            ))
            .hint("name another bucket; nothing was written"),
            (_, "AuthorizationHeaderMalformed") => Error::bad_input(format!(
                "{} refused the request's region: {}",
                location.endpoint,
                region_hint(&text)
            ))
            .hint("set AWS_REGION to the store's region"),
            (400..=499, _) => Error::bad_input(format!(
                "{} refused to create the bucket {}: {code} ({said})",
                location.endpoint, location.bucket
            ))
            .hint("create the bucket with the store's own tools, or name another one"),
            _ => {
                let error = cannot(format!("HTTP {status} {code} ({said})"))
                    .hint("run init again in a while; nothing was written");
                if status.is_server_error() {
                    error.transient()
                } else {
                    error
                }
            }
        })
    }
}

/// Refuses a name S3 would refuse for a new bucket (3 to 63 lower-case
/// letters, digits, dots and hyphens, beginning and ending with a letter or
/// digit), before anything is asked of the store.
pub(super) fn check_name(location: &S3Location) -> Result<()> {
    let name = location.bucket.as_str();
    let edge = |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    let valid = (3..=63).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' || c == '-')
        && edge(name.chars().next())
        && edge(name.chars().last())
        && !name.contains("..");
    if valid {
        return Ok(());
    }
    Err(Error::bad_input(format!(
        "the bucket {name:?} does not exist at {}, and S3 would not create a bucket of that \
         name: 3 to 63 lower-case letters, digits, dots and hyphens, beginning and ending \
         with a letter or digit",
        location.endpoint
    ))
    .hint("check the repository's URL, or name another bucket; nothing was written"))
}

/// The text of the first `<NAME>` element of an S3 error document.
fn element<'a>(xml: &'a str, name: &str) -> Option<&'a str> {
    let open = format!("<{name}>");
    let start = xml.find(&open)? + open.len();
    let len = xml[start..].find(&format!("</{name}>"))?;
    Some(&xml[start..start + len])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(bucket: &str) -> S3Location {
        S3Location {
            endpoint: "http://127.0.0.1:9".into(),
            bucket: bucket.into(),
            prefix: String::new(),
        }
    }

    #[test]
    fn names_s3_would_refuse_are_refused_before_any_request() {
        for good in ["abc", "platter-test", "a.b-c9", &"x".repeat(63)] {
            assert!(check_name(&at(good)).is_ok(), "{good}");
        }
        for bad in [
            "ab",
            "Upper",
            "under_score",
            "-lead",
            "trail.",
            "a..b",
            &"x".repeat(64),
        ] {
            let e = check_name(&at(bad)).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::BadInput, "{bad}");
        }
    }

    #[test]
    fn error_documents_give_their_code_and_message() {
        let xml = "<?xml version=\"1.0\"?><Error><Code>AccessDenied</Code>\
                   <Message>Forbidden: not allowed</Message></Error>";
        assert_eq!(element(xml, "Code"), Some("AccessDenied"));
        assert_eq!(element(xml, "Message"), Some("Forbidden: not allowed"));
        assert_eq!(element("", "Code"), None);
        assert_eq!(element("<Code>open", "Code"), None);
    }
}
