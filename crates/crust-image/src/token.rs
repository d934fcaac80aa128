//! The OAuth2 refresh-token flow Docker calls "identity tokens" (CRI
//! `AuthConfig.identity_token`): the registry's Bearer challenge names a
//! token realm, which trades the refresh token for an access token that
//! the pull then sends as a bearer token. oci-client has no such flow, so
//! this small piece is crust's own.

use std::time::Duration;

use crate::ImageError;
use crate::registry::{describe, http_client, read_token_body, token_from_json};

/// A Bearer challenge: `Bearer realm="...",service="...",scope="..."`.
#[derive(Debug, PartialEq, Eq)]
pub struct Challenge {
    pub realm: String,
    pub service: String,
}

pub fn parse_challenge(header: &str) -> Option<Challenge> {
    let rest = header
        .trim()
        .strip_prefix("Bearer ")
        .or_else(|| header.trim().strip_prefix("bearer "))?;
    let mut realm = None;
    let mut service = String::new();
    for part in split_params(rest) {
        let (key, value) = part.split_once('=')?;
        let value = value.trim().trim_matches('"').to_string();
        match key.trim() {
            "realm" => realm = Some(value),
            "service" => service = value,
            _ => {}
        }
    }
    Some(Challenge {
        realm: realm?,
        service,
    })
}

/// Splits `a="x,y",b=z` at commas outside quotes.
fn split_params(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut start, mut quoted) = (0, false);
    for (i, c) in s.char_indices() {
        match c {
            '"' => quoted = !quoted,
            ',' if !quoted => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out.into_iter().filter(|p| !p.trim().is_empty()).collect()
}

fn form_encode(pairs: &[(&str, &str)]) -> String {
    let encode = |s: &str| {
        s.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect::<String>()
    };
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// Trades `refresh_token` for an access token to pull `repository` from
/// the registry at `base` (e.g. `https://registry.example.com`).
pub async fn exchange(
    base: &str,
    repository: &str,
    refresh_token: &str,
    ca_certs: &[Vec<u8>],
    skip_verify: bool,
    timeout: Duration,
) -> Result<String, ImageError> {
    let denied = |message: String| ImageError::Denied {
        image: format!("{base}/{repository}"),
        message,
    };
    // A redirect must not carry the token anywhere else.
    let client = http_client(ca_certs, skip_verify, timeout, false)?;
    let probe = client
        .get(format!("{base}/v2/"))
        .send()
        .await
        .map_err(|e| ImageError::Registry {
            image: repository.to_string(),
            message: format!("GET {base}/v2/: {}", describe(&e)),
        })?;
    let challenge = probe
        .headers()
        .get(reqwest::header::WWW_AUTHENTICATE)
        .and_then(|h| h.to_str().ok())
        .and_then(parse_challenge)
        .ok_or_else(|| {
            denied(
                "the registry asked for no bearer token, so an identity token cannot be used"
                    .into(),
            )
        })?;
    let scope = format!("repository:{repository}:pull");
    let body = form_encode(&[
        ("grant_type", "refresh_token"),
        ("refresh_token", refresh_token),
        ("service", &challenge.service),
        ("scope", &scope),
        ("client_id", "crust"),
    ]);
    let mut response = client
        .post(&challenge.realm)
        .header(
            reqwest::header::CONTENT_TYPE,
            "application/x-www-form-urlencoded",
        )
        .body(body)
        .send()
        .await
        .map_err(|e| denied(format!("token realm {}: {}", challenge.realm, describe(&e))))?;
    let status = response.status();
    let bytes = read_token_body(&mut response, timeout, &challenge.realm)
        .await
        .map_err(|message| ImageError::Registry {
            image: format!("{base}/{repository}"),
            message,
        })?;
    if !status.is_success() {
        return Err(denied(format!(
            "token realm {} refused the identity token: {status}",
            challenge.realm
        )));
    }
    token_from_json(&bytes).map_err(denied)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges_parse() {
        let c = parse_challenge(r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:a/b:pull,push""#).unwrap();
        assert_eq!(c.realm, "https://auth.docker.io/token");
        assert_eq!(c.service, "registry.docker.io");
        assert!(parse_challenge(r#"Basic realm="x""#).is_none());
        assert!(
            parse_challenge("Bearer service=\"x\"").is_none(),
            "a realm is required"
        );
    }

    #[test]
    fn forms_are_encoded() {
        assert_eq!(
            form_encode(&[("a", "x y&z"), ("b", "é")]),
            "a=x%20y%26z&b=%C3%A9"
        );
    }
}
