//! Which hosts a pull talks to, and how: mirrors before the upstream,
//! plain HTTP for loopback and listed hosts, credentials only for the
//! host they were given for.

use std::time::Duration;

use crust_config::RegistriesConfig;
use oci_client::client::{Certificate, CertificateEncoding, ClientConfig, ClientProtocol};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};

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
    fn auth(&self) -> RegistryAuth {
        if !self.registry_token.is_empty() {
            RegistryAuth::Bearer(self.registry_token.clone())
        } else if !self.username.is_empty() {
            RegistryAuth::Basic(self.username.clone(), self.password.clone())
        } else {
            RegistryAuth::Anonymous
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

/// A client for one endpoint of one pull (fresh, so no token or
/// credential leaks from one pull to another).
pub fn client_for(endpoint: &Endpoint, ca_certs: &[Vec<u8>], read_timeout: Duration) -> Client {
    let protocol = if endpoint.plain_http {
        ClientProtocol::HttpsExcept(vec![endpoint.host.clone()])
    } else {
        ClientProtocol::Https
    };
    Client::new(ClientConfig {
        protocol,
        accept_invalid_certificates: endpoint.skip_verify,
        extra_root_certificates: ca_certs
            .iter()
            .map(|pem| Certificate {
                encoding: CertificateEncoding::Pem,
                data: pem.clone(),
            })
            .collect(),
        platform_resolver: None,
        read_timeout: Some(read_timeout),
        connect_timeout: Some(Duration::from_secs(30)),
        user_agent: concat!("crust/", env!("CARGO_PKG_VERSION")),
        ..Default::default()
    })
}

/// The reference as this endpoint knows it, and the auth to send there.
pub fn reference_at(
    endpoint: &Endpoint,
    image: &ImageRef,
    registry: &str,
    digest: Option<&str>,
    credentials: &Credentials,
) -> (Reference, RegistryAuth) {
    let reference = match (digest.or(image.digest.as_deref()), &image.tag) {
        (Some(d), _) => Reference::with_digest(
            endpoint.host.clone(),
            image.repository.clone(),
            d.to_string(),
        ),
        (None, Some(t)) => {
            Reference::with_tag(endpoint.host.clone(), image.repository.clone(), t.clone())
        }
        (None, None) => Reference::with_tag(
            endpoint.host.clone(),
            image.repository.clone(),
            "latest".into(),
        ),
    };
    let auth = if endpoint.is_mirror || !credentials.belongs_to(registry) {
        RegistryAuth::Anonymous
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
        let (_, auth) = reference_at(upstream, &image, "reg.example.com", None, &creds);
        assert!(matches!(auth, RegistryAuth::Basic(..)));
        let mirror = Endpoint {
            host: "mirror:5000".into(),
            plain_http: true,
            skip_verify: false,
            is_mirror: true,
        };
        let (r, auth) = reference_at(&mirror, &image, "reg.example.com", None, &creds);
        assert!(matches!(auth, RegistryAuth::Anonymous));
        assert_eq!(r.registry(), "mirror:5000");
        let other = Credentials {
            server_address: "https://other.example.com/".into(),
            ..creds
        };
        let (_, auth) = reference_at(upstream, &image, "reg.example.com", None, &other);
        assert!(matches!(auth, RegistryAuth::Anonymous));
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
