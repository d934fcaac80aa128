//! Plugin results of every version, converted to one form.
//!
//! - 0.1.0 / 0.2.0: `{"ip4": {"ip", "gateway", "routes"}, "ip6": {..}, "dns"}`
//! - 0.3.0 / 0.3.1 / 0.4.0: `{"interfaces", "ips": [{"version", "address",
//!   "gateway", "interface"}], "routes", "dns"}`
//! - 1.0.0 / 1.1.0: as 0.4.0 without `ips[].version`.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::config::parse_version;

/// A plugin result in the common form.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CniResult {
    /// The version the plugin answered in.
    pub cni_version: String,
    #[serde(default)]
    pub interfaces: Vec<Interface>,
    #[serde(default)]
    pub ips: Vec<IpConfig>,
    #[serde(default)]
    pub routes: Vec<Route>,
    #[serde(default)]
    pub dns: DnsResult,
}

/// An interface the plugin created or configured.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Interface {
    pub name: String,
    #[serde(default)]
    pub mac: String,
    /// The netns path for interfaces inside the pod; empty on the host.
    #[serde(default)]
    pub sandbox: String,
}

/// One address assigned by the plugin.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpConfig {
    /// Address with prefix length, e.g. "10.88.0.2/16".
    pub address: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    /// Index into the result's `interfaces`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<usize>,
}

impl IpConfig {
    /// The address without its prefix length.
    pub fn ip(&self) -> Option<IpAddr> {
        self.address.split('/').next()?.parse().ok()
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    pub dst: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gw: Option<String>,
}

/// DNS settings a plugin reported (kubelet's own DNS config wins; this is
/// informational).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DnsResult {
    #[serde(default)]
    pub nameservers: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    #[serde(default)]
    pub search: Vec<String>,
    #[serde(default)]
    pub options: Vec<String>,
}

impl CniResult {
    /// Converts a raw result. `expected_version` is used when the result has
    /// no `cniVersion` of its own. Errors name the field at fault.
    pub fn parse(raw: &Value, expected_version: &str) -> Result<CniResult, String> {
        let Value::Object(obj) = raw else {
            return Err("the result is not a JSON object".into());
        };
        let version = match obj.get("cniVersion") {
            Some(Value::String(v)) => v.clone(),
            None | Some(Value::Null) => expected_version.to_string(),
            Some(_) => return Err("\"cniVersion\" of the result is not a string".into()),
        };
        let Some(v) = parse_version(&version) else {
            return Err(format!("result cniVersion \"{version}\" is malformed"));
        };
        let mut result = CniResult {
            cni_version: version.clone(),
            ..Default::default()
        };
        if let Some(dns) = obj.get("dns") {
            result.dns = parse_dns(dns)?;
        }
        if v < (0, 3, 0) {
            for key in ["ip4", "ip6"] {
                let Some(ipc) = obj.get(key) else { continue };
                if ipc.is_null() {
                    continue;
                }
                let address =
                    str_field(ipc, "ip", key)?.ok_or_else(|| format!("{key}.ip is missing"))?;
                check_cidr(&address, &format!("{key}.ip"))?;
                let gateway = str_field(ipc, "gateway", key)?;
                result.ips.push(IpConfig {
                    address,
                    gateway,
                    interface: None,
                });
                if let Some(routes) = ipc.get("routes") {
                    result
                        .routes
                        .extend(parse_routes(routes, &format!("{key}.routes"))?);
                }
            }
            return Ok(result);
        }
        if v.0 > 1 {
            return Err(format!("result cniVersion \"{version}\" is not supported"));
        }

        if let Some(ifaces) = obj.get("interfaces").filter(|v| !v.is_null()) {
            let Value::Array(items) = ifaces else {
                return Err("\"interfaces\" is not an array".into());
            };
            for (i, item) in items.iter().enumerate() {
                let ctx = format!("interfaces[{i}]");
                let name = str_field(item, "name", &ctx)?
                    .ok_or_else(|| format!("{ctx}.name is missing"))?;
                result.interfaces.push(Interface {
                    name,
                    mac: str_field(item, "mac", &ctx)?.unwrap_or_default(),
                    sandbox: str_field(item, "sandbox", &ctx)?.unwrap_or_default(),
                });
            }
        }
        if let Some(ips) = obj.get("ips").filter(|v| !v.is_null()) {
            let Value::Array(items) = ips else {
                return Err("\"ips\" is not an array".into());
            };
            for (i, item) in items.iter().enumerate() {
                let ctx = format!("ips[{i}]");
                let address = str_field(item, "address", &ctx)?
                    .ok_or_else(|| format!("{ctx}.address is missing"))?;
                check_cidr(&address, &format!("{ctx}.address"))?;
                let gateway = str_field(item, "gateway", &ctx)?;
                let interface = match item.get("interface") {
                    None | Some(Value::Null) => None,
                    Some(Value::Number(n)) => n
                        .as_u64()
                        .and_then(|n| usize::try_from(n).ok())
                        .filter(|n| *n < result.interfaces.len()),
                    Some(_) => return Err(format!("{ctx}.interface is not a number")),
                };
                result.ips.push(IpConfig {
                    address,
                    gateway,
                    interface,
                });
            }
        }
        if let Some(routes) = obj.get("routes") {
            result.routes = parse_routes(routes, "routes")?;
        }
        Ok(result)
    }

    /// The addresses that belong to the pod: those on an interface inside
    /// the sandbox, or all of them when the plugin said nothing about
    /// interfaces.
    pub fn pod_ips(&self) -> Vec<IpConfig> {
        let in_sandbox = |ip: &IpConfig| {
            ip.interface
                .and_then(|i| self.interfaces.get(i))
                .is_some_and(|iface| !iface.sandbox.is_empty())
        };
        if self.ips.iter().any(in_sandbox) {
            self.ips
                .iter()
                .filter(|ip| in_sandbox(ip))
                .cloned()
                .collect()
        } else {
            self.ips.clone()
        }
    }
}

fn str_field(v: &Value, key: &str, ctx: &str) -> Result<Option<String>, String> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(format!("{ctx}.{key} is not a string")),
    }
}

fn str_list(v: &Value, key: &str, ctx: &str) -> Result<Vec<String>, String> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .map(|i| {
                i.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| format!("{ctx}.{key} has a non-string item"))
            })
            .collect(),
        Some(_) => Err(format!("{ctx}.{key} is not an array")),
    }
}

fn check_cidr(address: &str, ctx: &str) -> Result<(), String> {
    let bad = || format!("{ctx} \"{address}\" is not an address with a prefix length");
    let (ip, prefix) = address.split_once('/').ok_or_else(bad)?;
    let ip: IpAddr = ip.parse().map_err(|_| bad())?;
    let prefix: u8 = prefix.parse().map_err(|_| bad())?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    if prefix > max {
        return Err(bad());
    }
    Ok(())
}

fn parse_routes(v: &Value, ctx: &str) -> Result<Vec<Route>, String> {
    match v {
        Value::Null => Ok(Vec::new()),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .map(|(i, item)| {
                let c = format!("{ctx}[{i}]");
                Ok(Route {
                    dst: str_field(item, "dst", &c)?
                        .ok_or_else(|| format!("{c}.dst is missing"))?,
                    gw: str_field(item, "gw", &c)?,
                })
            })
            .collect(),
        _ => Err(format!("{ctx} is not an array")),
    }
}

fn parse_dns(v: &Value) -> Result<DnsResult, String> {
    match v {
        Value::Null => Ok(DnsResult::default()),
        Value::Object(_) => Ok(DnsResult {
            nameservers: str_list(v, "nameservers", "dns")?,
            domain: str_field(v, "domain", "dns")?,
            search: str_list(v, "search", "dns")?,
            options: str_list(v, "options", "dns")?,
        }),
        _ => Err("\"dns\" is not an object".into()),
    }
}
