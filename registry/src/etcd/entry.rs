//! One etcd entry: the key an endpoint lives under and its JSON value.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::endpoint::{Address, Endpoint, EndpointLimits};

/// `<prefix>/<service>/<instance>`.
pub(crate) fn key(prefix: &str, service: &str, instance: &str) -> String {
    format!("{prefix}/{service}/{instance}")
}

/// The start of every key of `service`: `<prefix>/<service>/`.
pub(crate) fn service_range(prefix: &str, service: &str) -> Vec<u8> {
    format!("{prefix}/{service}/").into_bytes()
}

/// The value as stored: the address as a URL-like string, so that
/// `etcdctl get` shows something a person (or a client in another language)
/// reads at once.
#[derive(Serialize)]
struct ValueOut<'a> {
    address: String,
    weight: u32,
    metadata: &'a BTreeMap<String, String>,
}

#[derive(Deserialize)]
struct ValueIn {
    address: String,
    #[serde(default = "default_weight")]
    weight: u32,
    #[serde(default)]
    metadata: BTreeMap<String, String>,
}

fn default_weight() -> u32 {
    1
}

/// The JSON value `endpoint` is stored as.
pub(crate) fn encode(endpoint: &Endpoint) -> String {
    let value = ValueOut {
        address: endpoint.address.to_string(),
        weight: endpoint.weight,
        metadata: &endpoint.metadata,
    };
    // A struct of strings and integers always serializes.
    serde_json::to_string(&value).unwrap_or_default()
}

/// What [`decode`] needs besides the bytes.
pub(crate) struct Decoder<'a> {
    pub(crate) range: &'a [u8],
    pub(crate) service: &'a str,
    pub(crate) max_value_len: usize,
    pub(crate) limits: &'a EndpointLimits,
}

impl Decoder<'_> {
    /// The instance name a key of the watched range names, if it is one.
    pub(crate) fn instance<'k>(&self, key: &'k [u8]) -> Option<&'k str> {
        let rest = key.strip_prefix(self.range)?;
        std::str::from_utf8(rest).ok()
    }

    /// The endpoint an entry holds, or why it holds none (for the report).
    pub(crate) fn decode(&self, key: &[u8], value: &[u8]) -> Result<Endpoint, String> {
        let shown = String::from_utf8_lossy(key);
        let instance = self
            .instance(key)
            .ok_or_else(|| format!("key {shown:?} is not UTF-8 under the service's prefix"))?;
        if value.len() > self.max_value_len {
            return Err(format!(
                "key {shown:?}: value of {} bytes exceeds the limit of {}",
                value.len(),
                self.max_value_len
            ));
        }
        let parsed: ValueIn = serde_json::from_slice(value)
            .map_err(|e| format!("key {shown:?}: value is not an endpoint object: {e}"))?;
        let address = parse_address(&parsed.address)
            .ok_or_else(|| format!("key {shown:?}: bad address {:?}", parsed.address))?;
        let endpoint = Endpoint {
            service: self.service.to_owned(),
            instance: instance.to_owned(),
            address,
            weight: parsed.weight,
            metadata: parsed.metadata,
        };
        endpoint
            .validate(self.limits)
            .map_err(|e| format!("key {shown:?}: {e}"))?;
        Ok(endpoint)
    }
}

/// `tcp://<socket address>` or `unix://<path>`.
fn parse_address(text: &str) -> Option<Address> {
    if let Some(addr) = text.strip_prefix("tcp://") {
        return addr.parse::<SocketAddr>().ok().map(Address::Tcp);
    }
    text.strip_prefix("unix://")
        .map(|path| Address::Unix(path.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decoder(limits: &EndpointLimits, max: usize) -> Decoder<'_> {
        Decoder {
            range: b"/p/kv/",
            service: "kv",
            max_value_len: max,
            limits,
        }
    }

    #[test]
    fn the_value_is_readable_json_and_round_trips() {
        let endpoint = Endpoint::new(
            "kv",
            "kv-1",
            Address::Tcp("127.0.0.1:7001".parse().unwrap()),
        )
        .with_weight(3)
        .with_metadata("zone", "a");
        let text = encode(&endpoint);
        assert_eq!(
            text,
            r#"{"address":"tcp://127.0.0.1:7001","weight":3,"metadata":{"zone":"a"}}"#
        );
        let limits = EndpointLimits::default();
        let back = decoder(&limits, 1024).decode(b"/p/kv/kv-1", text.as_bytes());
        assert_eq!(back, Ok(endpoint));
    }

    #[test]
    fn unix_and_ipv6_addresses_round_trip() {
        let limits = EndpointLimits::default();
        for address in [
            Address::Unix("/run/kv.sock".into()),
            Address::Tcp("[::1]:9".parse().unwrap()),
        ] {
            let endpoint = Endpoint::new("kv", "a", address);
            let text = encode(&endpoint);
            let back = decoder(&limits, 1024).decode(b"/p/kv/a", text.as_bytes());
            assert_eq!(back, Ok(endpoint));
        }
    }

    #[test]
    fn weight_and_metadata_are_optional_and_unknown_fields_ignored() {
        let limits = EndpointLimits::default();
        let value = br#"{"address":"tcp://10.0.0.5:7001","owner":"ops"}"#;
        let endpoint = decoder(&limits, 1024).decode(b"/p/kv/x", value).unwrap();
        assert_eq!(endpoint.weight, 1);
        assert!(endpoint.metadata.is_empty());
        assert_eq!(endpoint.instance, "x");
    }

    #[test]
    fn garbage_is_refused_with_the_key_named() {
        let limits = EndpointLimits::default();
        let d = decoder(&limits, 1024);
        for value in [
            &b"not json"[..],
            br#"{"weight":1}"#,
            br#"{"address":"http://x"}"#,
            br#"{"address":"tcp://nohost"}"#,
            br#"{"address":"tcp://1.2.3.4:5","weight":-1}"#,
            br#"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["#,
            b"\xff\xfe",
        ] {
            let error = d.decode(b"/p/kv/a", value).unwrap_err();
            assert!(error.contains("/p/kv/a"), "{error}");
        }
        // A key deeper than one segment names no valid instance.
        let value = br#"{"address":"tcp://1.2.3.4:5"}"#;
        assert!(d.decode(b"/p/kv/a/b", value).is_err());
        assert!(d.decode(b"/p/kv/", value).is_err());
    }

    #[test]
    fn the_value_length_is_checked_below_at_and_above_the_limit() {
        let limits = EndpointLimits::default();
        let value = br#"{"address":"tcp://1.2.3.4:5"}"#;
        let len = value.len();
        assert!(decoder(&limits, len + 1).decode(b"/p/kv/a", value).is_ok());
        assert!(decoder(&limits, len).decode(b"/p/kv/a", value).is_ok());
        let error = decoder(&limits, len - 1)
            .decode(b"/p/kv/a", value)
            .unwrap_err();
        assert!(error.contains("exceeds"), "{error}");
    }

    #[test]
    fn metadata_limits_apply_to_what_is_read() {
        let limits = EndpointLimits {
            max_metadata_entries: 1,
            ..EndpointLimits::default()
        };
        let value = br#"{"address":"tcp://1.2.3.4:5","metadata":{"a":"1","b":"2"}}"#;
        assert!(decoder(&limits, 1024).decode(b"/p/kv/a", value).is_err());
    }
}
