//! Which hosts a pull talks to, and how: mirrors before the upstream,
//! plain HTTP for loopback and listed hosts, credentials only for the
//! host they were given for.

use std::time::Duration;

use crust_config::RegistriesConfig;

use crate::ImageError;
use crate::reference::ImageRef;

/// Credentials from the CRI AuthConfig, already decoded.
#[derive(Clone, Default)]
pub struct Credentials {
    pub username: String,
    pub password: String,
    /// A registry bearer token, sent as is.
    pub registry_token: String,
    /// An OAuth2 refresh token ("identity token"), traded for an access
    /// token at the registry's token realm.
    pub identity_token: String,
    /// The host these credentials belong to (CRI `server_address`); empty
    /// means "the image's registry".
    pub server_address: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("server_address", &self.server_address)
            .finish_non_exhaustive()
    }
}

impl Credentials {
    fn auth(&self) -> Auth {
        if !self.registry_token.is_empty() {
            Auth::Bearer(self.registry_token.clone())
        } else if !self.username.is_empty() {
            Auth::Basic(self.username.clone(), self.password.clone())
        } else {
            Auth::Anonymous
        }
    }

    /// Whether these credentials were given for `registry`.
    pub(crate) fn belongs_to(&self, registry: &str) -> bool {
        let server = self
            .server_address
            .trim_start_matches("https://")
            .trim_start_matches("http://")
            .trim_end_matches('/');
        let server = server.split('/').next().unwrap_or("");
        let same = |a: &str, b: &str| {
            let docker =
                |h: &str| matches!(h, "docker.io" | "index.docker.io" | "registry-1.docker.io");
            a == b || (docker(a) && docker(b))
        };
        server.is_empty() || same(server, registry)
    }
}

/// One place an image can be fetched from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// host[:port] to connect to.
    pub host: String,
    pub plain_http: bool,
    pub skip_verify: bool,
    /// Mirrors get no credentials: they were given for the upstream.
    pub is_mirror: bool,
}

/// Loopback registries may be plain HTTP without configuration, as in Docker.
pub fn is_loopback(host: &str) -> bool {
    let name = match host.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) && !h.ends_with(':') => h,
        _ => host,
    };
    let name = name.trim_start_matches('[').trim_end_matches(']');
    name == "localhost"
        || name == "::1"
        || name
            .parse::<std::net::Ipv4Addr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Mirrors for `registry` in order, then the registry itself.
pub fn endpoints(config: &RegistriesConfig, registry: &str) -> Vec<Endpoint> {
    let listed = |list: &[String], host: &str| list.iter().any(|h| h == host);
    let mut out = Vec::new();
    for mirror in config.mirrors.get(registry).into_iter().flatten() {
        let (scheme, rest) = mirror.split_once("://").unwrap_or(("https", mirror));
        let host = rest.split('/').next().unwrap_or(rest).to_string();
        out.push(Endpoint {
            plain_http: scheme == "http" || listed(&config.plain_http, &host),
            skip_verify: listed(&config.skip_verify, &host),
            host,
            is_mirror: true,
        });
    }
    let upstream = if registry == "docker.io" {
        "registry-1.docker.io".to_string()
    } else {
        registry.to_string()
    };
    out.push(Endpoint {
        plain_http: is_loopback(registry) || listed(&config.plain_http, registry),
        skip_verify: listed(&config.skip_verify, registry),
        host: upstream,
        is_mirror: false,
    });
    out
}

/// Largest token response read (a token realm answering with an endless
/// body must not grow crustd's memory).
pub(crate) const MAX_TOKEN_RESPONSE: usize = 1 << 20;
/// Largest error body read, for the message.
const MAX_ERROR_BODY: usize = 64 << 10;

/// What to authenticate with at one endpoint.
#[derive(Clone)]
pub(crate) enum Auth {
    Anonymous,
    Basic(String, String),
    /// A bearer token sent as is (CRI registry_token, or one traded for an
    /// identity token).
    Bearer(String),
}

/// How a capped read failed.
pub(crate) enum CappedError {
    TooLarge,
    Stalled,
    Transfer(String),
}

/// Reads a response body, refusing it as soon as it grows past `limit`
/// (a declared Content-Length over the limit is refused before any byte
/// is read). Nothing beyond `limit` plus one chunk is ever held.
pub(crate) async fn read_capped(
    response: &mut reqwest::Response,
    limit: usize,
    stall: Duration,
) -> Result<Vec<u8>, CappedError> {
    if response.content_length().is_some_and(|n| n > limit as u64) {
        return Err(CappedError::TooLarge);
    }
    let mut body = Vec::new();
    loop {
        let chunk = tokio::time::timeout(stall, response.chunk())
            .await
            .map_err(|_| CappedError::Stalled)?
            .map_err(|e| CappedError::Transfer(describe(&e)))?;
        let Some(chunk) = chunk else {
            return Ok(body);
        };
        if body.len() + chunk.len() > limit {
            return Err(CappedError::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
}

/// A transport error with its cause spelled out (DNS, connect, TLS,
/// timeout) and the chain of sources, which reqwest's Display leaves out.
pub(crate) fn describe(e: &reqwest::Error) -> String {
    let mut chain = vec![e.to_string()];
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let text = s.to_string();
        if !chain.iter().any(|c| c.contains(&text)) {
            chain.push(text);
        }
        source = s.source();
    }
    let all = chain.join(": ");
    let lower = all.to_lowercase();
    let cause = if lower.contains("dns error") || lower.contains("failed to lookup address") {
        "DNS lookup failed"
    } else if lower.contains("certificate") || lower.contains("tls") || lower.contains("handshake")
    {
        "TLS failed"
    } else if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "cannot connect"
    } else if e.is_body() || e.is_decode() {
        "reading the response failed"
    } else {
        "request failed"
    };
    format!("{cause}: {all}")
}

fn human(limit: usize) -> String {
    if limit >= 1 << 20 && limit.is_multiple_of(1 << 20) {
        format!("{} MiB", limit >> 20)
    } else if limit >= 1 << 10 && limit.is_multiple_of(1 << 10) {
        format!("{} KiB", limit >> 10)
    } else {
        format!("{limit} bytes")
    }
}

/// A registry client for one endpoint and one repository of one pull
/// (fresh per pull, so no token or credential leaks from one pull to
/// another).
///
/// crust talks the distribution protocol itself, over reqwest, instead
/// of through oci-client 0.18: oci-client reads every manifest body
/// (`pull_manifest_raw` has no streaming form), every token response and
/// every error body whole into memory before anyone can check its size,
/// so a registry answering with an endless body grew crustd without bound.
/// Here each body is read with a cap while it streams.
pub(crate) struct RegistryClient {
    http: reqwest::Client,
    /// scheme://host
    base: String,
    pub(crate) host: String,
    repository: String,
    auth: Auth,
    stall: Duration,
    /// The Authorization header value, once known.
    authorization: tokio::sync::Mutex<Option<String>>,
}

impl RegistryClient {
    pub(crate) fn new(
        endpoint: &Endpoint,
        repository: &str,
        auth: Auth,
        ca_certs: &[Vec<u8>],
        stall: Duration,
    ) -> Result<RegistryClient, ImageError> {
        let http = http_client(ca_certs, endpoint.skip_verify, stall, true)?;
        let scheme = if endpoint.plain_http { "http" } else { "https" };
        let authorization = match &auth {
            Auth::Bearer(token) => Some(format!("Bearer {token}")),
            _ => None,
        };
        Ok(RegistryClient {
            http,
            base: format!("{scheme}://{}", endpoint.host),
            host: endpoint.host.clone(),
            repository: repository.to_string(),
            auth,
            stall,
            authorization: tokio::sync::Mutex::new(authorization),
        })
    }

    /// GETs `/v2/<repository>/<kind>/<reference>`, answering one auth
    /// challenge (a Bearer token from the realm, or Basic credentials).
    /// The response is returned with a success status only.
    async fn get(
        &self,
        kind: &str,
        reference: &str,
        accept: &str,
        image: &str,
    ) -> Result<reqwest::Response, ImageError> {
        let url = format!("{}/v2/{}/{kind}/{reference}", self.base, self.repository);
        let mut answered = false;
        loop {
            let mut request = self.http.get(&url);
            if !accept.is_empty() {
                request = request.header(reqwest::header::ACCEPT, accept);
            }
            if let Some(value) = self.authorization.lock().await.clone() {
                request = request.header(reqwest::header::AUTHORIZATION, value);
            }
            let response = request.send().await.map_err(|e| ImageError::Registry {
                image: image.to_string(),
                message: format!("GET {url}: {}", describe(&e)),
            })?;
            let status = response.status();
            if status.is_success() {
                return Ok(response);
            }
            if status == reqwest::StatusCode::UNAUTHORIZED && !answered {
                answered = true;
                let challenge = response
                    .headers()
                    .get(reqwest::header::WWW_AUTHENTICATE)
                    .and_then(|h| h.to_str().ok())
                    .map(str::to_string);
                if let Some(value) = self.answer(challenge.as_deref(), image).await? {
                    *self.authorization.lock().await = Some(value);
                    continue;
                }
            }
            return Err(self.status_error(response, &url, image).await);
        }
    }

    /// The Authorization value that answers `challenge`, if there is one.
    async fn answer(
        &self,
        challenge: Option<&str>,
        image: &str,
    ) -> Result<Option<String>, ImageError> {
        let Some(challenge) = challenge else {
            return Ok(None);
        };
        if let Some(bearer) = crate::token::parse_challenge(challenge) {
            if matches!(self.auth, Auth::Bearer(_)) {
                return Ok(None); // the token we were given was refused
            }
            let token = self.fetch_token(&bearer, image).await?;
            return Ok(Some(format!("Bearer {token}")));
        }
        match &self.auth {
            Auth::Basic(user, password) if challenge.trim().to_lowercase().starts_with("basic") => {
                let pair = format!("{user}:{password}");
                Ok(Some(format!("Basic {}", base64_encode(&pair))))
            }
            _ => Ok(None),
        }
    }

    /// The Docker token flow: GET the realm with scope and service (and
    /// Basic credentials when there are some); the body is read capped.
    async fn fetch_token(
        &self,
        challenge: &crate::token::Challenge,
        image: &str,
    ) -> Result<String, ImageError> {
        let denied = |message: String| ImageError::Denied {
            image: image.to_string(),
            message,
        };
        let failed = |message: String| ImageError::Registry {
            image: image.to_string(),
            message,
        };
        let mut url = reqwest::Url::parse(&challenge.realm)
            .map_err(|e| failed(format!("token realm {:?}: {e}", challenge.realm)))?;
        {
            let mut query = url.query_pairs_mut();
            query.append_pair("scope", &format!("repository:{}:pull", self.repository));
            if !challenge.service.is_empty() {
                query.append_pair("service", &challenge.service);
            }
        }
        let mut request = self.http.get(url);
        if let Auth::Basic(user, password) = &self.auth {
            request = request.basic_auth(user, Some(password));
        }
        let mut response = request
            .send()
            .await
            .map_err(|e| failed(format!("token realm {}: {}", challenge.realm, describe(&e))))?;
        let status = response.status();
        let body = read_token_body(&mut response, self.stall, &challenge.realm)
            .await
            .map_err(failed)?;
        if !status.is_success() {
            let text = String::from_utf8_lossy(&body[..body.len().min(512)]).into_owned();
            return Err(denied(format!(
                "token realm {} answered {status}: {}",
                challenge.realm,
                text.trim()
            )));
        }
        token_from_json(&body).map_err(|e| denied(format!("token realm {}: {e}", challenge.realm)))
    }

    /// An error for a non-success response, its body read capped.
    async fn status_error(
        &self,
        mut response: reqwest::Response,
        url: &str,
        image: &str,
    ) -> ImageError {
        let status = response.status();
        let body: Vec<u8> = read_capped(&mut response, MAX_ERROR_BODY, self.stall)
            .await
            .unwrap_or_default();
        let detail = error_detail(&body);
        let message = if detail.is_empty() {
            format!("GET {url}: HTTP {status}")
        } else {
            format!("GET {url}: HTTP {status}: {detail}")
        };
        let image = image.to_string();
        match status {
            reqwest::StatusCode::NOT_FOUND => ImageError::NotFound { image, message },
            reqwest::StatusCode::UNAUTHORIZED | reqwest::StatusCode::FORBIDDEN => {
                ImageError::Denied { image, message }
            }
            _ => ImageError::Registry { image, message },
        }
    }

    /// A manifest or index, read with a cap of `limit` bytes while it
    /// streams (never buffered whole first).
    pub(crate) async fn manifest(
        &self,
        reference: &str,
        accept: &[&str],
        limit: usize,
        image: &str,
    ) -> Result<Vec<u8>, ImageError> {
        let mut response = self
            .get("manifests", reference, &accept.join(", "), image)
            .await?;
        read_capped(&mut response, limit, self.stall)
            .await
            .map_err(|e| match e {
                CappedError::TooLarge => ImageError::Invalid(format!(
                    "manifest from {} exceeds {}",
                    self.host,
                    human(limit)
                )),
                CappedError::Stalled => ImageError::Stalled(format!("manifest of {image}")),
                CappedError::Transfer(m) => {
                    ImageError::Transfer(format!("manifest of {image} from {}: {m}", self.host))
                }
            })
    }

    /// A blob's response, to be read chunk by chunk by the caller.
    pub(crate) async fn blob(
        &self,
        digest: &str,
        image: &str,
    ) -> Result<reqwest::Response, ImageError> {
        self.get("blobs", digest, "", image).await
    }
}

fn base64_encode(s: &str) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let bytes = s.as_bytes();
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The OCI error envelope's codes and messages, or the body's first line.
fn error_detail(body: &[u8]) -> String {
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(body)
        && let Some(errors) = v.get("errors").and_then(|e| e.as_array())
    {
        let parts: Vec<String> = errors
            .iter()
            .map(|e| {
                let code = e.get("code").and_then(|c| c.as_str()).unwrap_or("");
                let message = e.get("message").and_then(|c| c.as_str()).unwrap_or("");
                format!("{code} {message}").trim().to_string()
            })
            .collect();
        return parts.join("; ");
    }
    let text = String::from_utf8_lossy(&body[..body.len().min(256)]);
    text.lines().next().unwrap_or("").trim().to_string()
}

/// A token response body, read capped.
pub(crate) async fn read_token_body(
    response: &mut reqwest::Response,
    stall: Duration,
    realm: &str,
) -> Result<Vec<u8>, String> {
    read_capped(response, MAX_TOKEN_RESPONSE, stall)
        .await
        .map_err(|e| match e {
            CappedError::TooLarge => format!(
                "token response from {realm} exceeds {}",
                human(MAX_TOKEN_RESPONSE)
            ),
            CappedError::Stalled => format!("token response from {realm} stalled"),
            CappedError::Transfer(m) => format!("token response from {realm}: {m}"),
        })
}

/// `token` or `access_token` of a token response.
pub(crate) fn token_from_json(body: &[u8]) -> Result<String, String> {
    let json: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| format!("token response is not JSON: {e}"))?;
    json.get("token")
        .or_else(|| json.get("access_token"))
        .and_then(|t| t.as_str())
        .filter(|t| !t.is_empty())
        .map(str::to_string)
        .ok_or_else(|| "token response has no token".to_string())
}

/// The HTTP client for registry and token requests: crust's user agent,
/// the configured CAs, a per-read stall timeout.
pub(crate) fn http_client(
    ca_certs: &[Vec<u8>],
    skip_verify: bool,
    read_timeout: Duration,
    follow_redirects: bool,
) -> Result<reqwest::Client, ImageError> {
    let mut builder = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(30))
        .read_timeout(read_timeout)
        // reqwest drops Authorization on a redirect to another host (blob
        // downloads are often redirected to a CDN).
        .redirect(if follow_redirects {
            reqwest::redirect::Policy::limited(10)
        } else {
            reqwest::redirect::Policy::none()
        })
        .danger_accept_invalid_certs(skip_verify)
        .user_agent(concat!("crust/", env!("CARGO_PKG_VERSION")));
    for pem in ca_certs {
        let cert = reqwest::Certificate::from_pem(pem)
            .map_err(|e| ImageError::Config(format!("CA file: {e}")))?;
        builder = builder.add_root_certificate(cert);
    }
    builder
        .build()
        .map_err(|e| ImageError::Config(format!("HTTP client: {e}")))
}

/// The reference (tag or digest) to ask this endpoint for, and the auth to
/// send there.
pub(crate) fn reference_at(
    endpoint: &Endpoint,
    image: &ImageRef,
    registry: &str,
    digest: Option<&str>,
    credentials: &Credentials,
) -> (String, Auth) {
    let reference = match (digest.or(image.digest.as_deref()), &image.tag) {
        (Some(d), _) => d.to_string(),
        (None, Some(t)) => t.clone(),
        (None, None) => "latest".into(),
    };
    let auth = if endpoint.is_mirror || !credentials.belongs_to(registry) {
        Auth::Anonymous
    } else {
        credentials.auth()
    };
    (reference, auth)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts() {
        for h in [
            "localhost",
            "localhost:5000",
            "127.0.0.1",
            "127.0.0.1:5099",
            "127.3.4.5:1",
            "[::1]:5000",
            "::1",
        ] {
            assert!(is_loopback(h), "{h}");
        }
        for h in [
            "10.0.0.1:5000",
            "registry.local",
            "docker.io",
            "localhost.evil.com",
        ] {
            assert!(!is_loopback(h), "{h}");
        }
    }

    #[test]
    fn mirrors_come_first_then_upstream() {
        let mut config = RegistriesConfig::default();
        config.mirrors.insert(
            "registry.k8s.io".into(),
            vec![
                "http://127.0.0.1:5099".into(),
                "https://mirror.example.com/v2".into(),
            ],
        );
        config.skip_verify.push("mirror.example.com".into());
        let eps = endpoints(&config, "registry.k8s.io");
        assert_eq!(eps.len(), 3);
        assert_eq!(eps[0].host, "127.0.0.1:5099");
        assert!(eps[0].plain_http && eps[0].is_mirror);
        assert_eq!(eps[1].host, "mirror.example.com");
        assert!(!eps[1].plain_http && eps[1].skip_verify);
        assert_eq!(eps[2].host, "registry.k8s.io");
        assert!(!eps[2].is_mirror && !eps[2].plain_http);
    }

    #[test]
    fn docker_hub_and_plain_http_config() {
        let mut config = RegistriesConfig::default();
        config.plain_http.push("myreg:5000".into());
        assert_eq!(
            endpoints(&config, "docker.io")[0].host,
            "registry-1.docker.io"
        );
        assert!(endpoints(&config, "myreg:5000")[0].plain_http);
        assert!(endpoints(&config, "127.0.0.1:5099")[0].plain_http);
        assert!(!endpoints(&config, "quay.io")[0].plain_http);
    }

    #[test]
    fn credentials_stay_with_their_host() {
        let image = crate::reference::parse_reference("reg.example.com/a/b:1").unwrap();
        let creds = Credentials {
            username: "u".into(),
            password: "p".into(),
            server_address: "reg.example.com".into(),
            ..Default::default()
        };
        let upstream = &endpoints(&RegistriesConfig::default(), "reg.example.com")[0];
        let (r, auth) = reference_at(upstream, &image, "reg.example.com", None, &creds);
        assert!(matches!(auth, Auth::Basic(..)));
        assert_eq!(r, "1");
        let mirror = Endpoint {
            host: "mirror:5000".into(),
            plain_http: true,
            skip_verify: false,
            is_mirror: true,
        };
        let (_, auth) = reference_at(&mirror, &image, "reg.example.com", None, &creds);
        assert!(matches!(auth, Auth::Anonymous));
        let other = Credentials {
            server_address: "https://other.example.com/".into(),
            ..creds
        };
        let (_, auth) = reference_at(upstream, &image, "reg.example.com", None, &other);
        assert!(matches!(auth, Auth::Anonymous));
    }

    #[test]
    fn docker_hub_credentials_match_its_aliases() {
        let creds = Credentials {
            username: "u".into(),
            server_address: "https://index.docker.io/v1/".into(),
            ..Default::default()
        };
        assert!(creds.belongs_to("docker.io"));
    }
}

#[cfg(test)]
mod client_tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A one-route-per-request HTTP server on loopback: `answer` gets the
    /// request head and writes whatever it likes.
    async fn serve<F, Fut>(answer: F) -> u16
    where
        F: Fn(String, tokio::net::TcpStream) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = ()> + Send,
    {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let answer = std::sync::Arc::new(answer);
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let answer = answer.clone();
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut byte = [0u8; 1];
                    while !head.ends_with(b"\r\n\r\n") {
                        if stream.read(&mut byte).await.unwrap_or(0) == 0 {
                            return;
                        }
                        head.push(byte[0]);
                    }
                    answer(String::from_utf8_lossy(&head).into_owned(), stream).await;
                });
            }
        });
        port
    }

    /// Writes `chunk` forever (until the peer goes away).
    async fn endless(mut stream: tokio::net::TcpStream, head: &str) {
        let _ = stream.write_all(head.as_bytes()).await;
        let chunk = vec![b' '; 64 << 10];
        while stream.write_all(&chunk).await.is_ok() {}
    }

    fn client(port: u16, auth: Auth) -> RegistryClient {
        let endpoint = Endpoint {
            host: format!("127.0.0.1:{port}"),
            plain_http: true,
            skip_verify: false,
            is_mirror: false,
        };
        RegistryClient::new(&endpoint, "a/b", auth, &[], Duration::from_secs(10)).unwrap()
    }

    #[tokio::test]
    async fn endless_manifest_body_is_cut_at_the_cap() {
        let port = serve(|_, s| endless(s, "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n")).await;
        let c = client(port, Auth::Anonymous);
        let err = c
            .manifest("latest", &["x"], 4 << 20, "img")
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(&format!("manifest from 127.0.0.1:{port} exceeds 4 MiB")),
            "{err}"
        );
    }

    #[tokio::test]
    async fn declared_oversized_manifest_is_refused_before_reading() {
        let port =
            serve(|_, s| endless(s, "HTTP/1.1 200 OK\r\nContent-Length: 999999999999\r\n\r\n"))
                .await;
        let err = client(port, Auth::Anonymous)
            .manifest("latest", &["x"], 1 << 20, "img")
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("exceeds 1 MiB"), "{err}");
    }

    #[tokio::test]
    async fn endless_token_response_is_cut_at_the_cap() {
        let port = serve(|head, mut s| async move {
            if head.starts_with("GET /token") {
                endless(s, "HTTP/1.1 200 OK\r\n\r\n").await;
            } else {
                let port = s.local_addr().unwrap().port();
                let reply = format!(
                    "HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\nWWW-Authenticate: Bearer realm=\"http://127.0.0.1:{port}/token\",service=\"x\"\r\n\r\n"
                );
                let _ = s.write_all(reply.as_bytes()).await;
            }
        })
        .await;
        let err = client(port, Auth::Anonymous)
            .manifest("latest", &["x"], 4 << 20, "img")
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("token response from"), "{err}");
        assert!(err.contains("exceeds 1 MiB"), "{err}");
    }

    #[tokio::test]
    async fn bearer_and_basic_challenges_are_answered() {
        let port = serve(|head, mut s| async move {
            let port = s.local_addr().unwrap().port();
            let reply = if head.starts_with("GET /token") {
                assert!(head.contains("scope=repository%3Aa%2Fb%3Apull"), "{head}");
                assert!(head.to_lowercase().contains("authorization: basic dtpw"), "{head}");
                "HTTP/1.1 200 OK\r\nContent-Length: 15\r\n\r\n{\"token\":\"tok\"}".to_string()
            } else if head.contains("Bearer tok") {
                "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}".to_string()
            } else {
                format!(
                    "HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\nWWW-Authenticate: Bearer realm=\"http://127.0.0.1:{port}/token\"\r\n\r\n"
                )
            };
            let _ = s.write_all(reply.as_bytes()).await;
        })
        .await;
        let c = client(port, Auth::Basic("u".into(), "p".into()));
        assert_eq!(
            c.manifest("latest", &["x"], 1 << 20, "img").await.unwrap(),
            b"{}"
        );
    }

    #[tokio::test]
    async fn http_status_and_transport_errors_carry_their_cause() {
        let port = serve(|_, mut s| async move {
            let body = r#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}"#;
            let reply = format!(
                "HTTP/1.1 404 Not Found\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
            let _ = s.write_all(reply.as_bytes()).await;
        })
        .await;
        let err = client(port, Auth::Anonymous)
            .manifest("latest", &["x"], 1 << 20, "img")
            .await
            .unwrap_err();
        assert!(matches!(err, ImageError::NotFound { .. }), "{err}");
        let text = err.to_string();
        assert!(
            text.contains("404") && text.contains("MANIFEST_UNKNOWN"),
            "{text}"
        );
        // Nothing listens there.
        let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let dead_port = dead.local_addr().unwrap().port();
        drop(dead);
        let err = client(dead_port, Auth::Anonymous)
            .manifest("latest", &["x"], 1 << 20, "img")
            .await
            .unwrap_err();
        assert!(matches!(err, ImageError::Registry { .. }), "{err}");
        assert!(err.to_string().contains("cannot connect"), "{err}");
        assert!(err.to_string().to_lowercase().contains("refused"), "{err}");
    }

    #[test]
    fn base64_matches_the_standard_alphabet() {
        assert_eq!(base64_encode("u:p"), "dTpw");
        assert_eq!(
            base64_encode("crust:crust-secret"),
            "Y3J1c3Q6Y3J1c3Qtc2VjcmV0"
        );
        assert_eq!(base64_encode("ab"), "YWI=");
        assert_eq!(base64_encode("a"), "YQ==");
    }
}
