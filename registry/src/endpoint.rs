//! One registered instance of a service, and the limits it is checked against.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;

use courier::schema::Shape;
use serde::{Deserialize, Serialize};

/// Where an instance accepts connections.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Address {
    /// A TCP socket address.
    Tcp(SocketAddr),
    /// A Unix socket path, as UTF-8.
    Unix(String),
}

/// serde writes a [`SocketAddr`] for postcard (not human-readable) as the
/// enum `V4((octets [u8; 4], port u16)) | V6((octets [u8; 16], port u16))`
/// (an IPv6 address's flow info and scope id are not sent).
const SOCKET_V4: Shape = Shape::Tuple(&[&Shape::Array(4, &Shape::U8), &Shape::U16]);
const SOCKET_V6: Shape = Shape::Tuple(&[&Shape::Array(16, &Shape::U8), &Shape::U16]);
const SOCKET_ADDR: Shape = Shape::Enum(&[&[&SOCKET_V4], &[&SOCKET_V6]]);

impl courier::Schema for Address {
    const SCHEMA: &'static Shape = &Shape::Enum(&[&[&SOCKET_ADDR], &[&Shape::String]]);
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Address::Tcp(addr) => write!(f, "tcp://{addr}"),
            Address::Unix(path) => write!(f, "unix://{path}"),
        }
    }
}

/// One registered instance of a service.
///
/// An instance is identified by `(service, instance)`; registering the same
/// pair again replaces the earlier registration (an update).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, courier::Schema)]
pub struct Endpoint {
    /// The service's name, e.g. `"kv"`.
    pub service: String,
    /// The instance's name, unique within the service, e.g. `"kv-1"`.
    pub instance: String,
    /// Where the instance accepts connections.
    pub address: Address,
    /// A relative weight for load balancing; 0 means "send nothing here".
    pub weight: u32,
    /// Free-form labels such as `version` or `zone`.
    pub metadata: BTreeMap<String, String>,
}

impl Endpoint {
    /// An endpoint of weight 1 without metadata.
    pub fn new(service: impl Into<String>, instance: impl Into<String>, address: Address) -> Self {
        Endpoint {
            service: service.into(),
            instance: instance.into(),
            address,
            weight: 1,
            metadata: BTreeMap::new(),
        }
    }

    /// This endpoint with `weight`.
    #[must_use]
    pub fn with_weight(mut self, weight: u32) -> Self {
        self.weight = weight;
        self
    }

    /// This endpoint with one more metadata entry.
    #[must_use]
    pub fn with_metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.metadata.insert(key.into(), value.into());
        self
    }

    /// Checks every field against `limits`.
    pub fn validate(&self, limits: &EndpointLimits) -> Result<(), InvalidEndpoint> {
        check_name(&self.service, limits.max_name_len, Field::Service)?;
        check_name(&self.instance, limits.max_name_len, Field::Instance)?;
        if let Address::Unix(path) = &self.address {
            if path.is_empty() || path.len() > limits.max_unix_path_len {
                return Err(InvalidEndpoint::Address);
            }
        }
        if self.metadata.len() > limits.max_metadata_entries {
            return Err(InvalidEndpoint::TooMuchMetadata);
        }
        let bytes = self.metadata.iter().fold(0usize, |sum, (k, v)| {
            sum.saturating_add(k.len()).saturating_add(v.len())
        });
        if bytes > limits.max_metadata_bytes {
            return Err(InvalidEndpoint::TooMuchMetadata);
        }
        Ok(())
    }
}

#[derive(Clone, Copy)]
enum Field {
    Service,
    Instance,
}

/// Names are 1..=max bytes of ASCII letters, digits and `-_.:`: safe as an
/// etcd key segment and in a log line.
fn check_name(name: &str, max: usize, field: Field) -> Result<(), InvalidEndpoint> {
    let allowed = |b: u8| b.is_ascii_alphanumeric() || b"-_.:".contains(&b);
    if name.is_empty() || name.len() > max || !name.bytes().all(allowed) {
        return Err(match field {
            Field::Service => InvalidEndpoint::ServiceName,
            Field::Instance => InvalidEndpoint::InstanceName,
        });
    }
    Ok(())
}

/// Size limits on what one registration may carry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndpointLimits {
    /// Longest service or instance name, in bytes. Default 128.
    pub max_name_len: usize,
    /// Longest Unix socket path, in bytes. Default 108 (Linux `sun_path`).
    pub max_unix_path_len: usize,
    /// Most metadata entries. Default 32.
    pub max_metadata_entries: usize,
    /// Most metadata bytes, keys and values together. Default 4 KiB.
    pub max_metadata_bytes: usize,
}

impl EndpointLimits {
    /// Checks a service name alone (as a watch names it).
    pub fn check_service(&self, name: &str) -> Result<(), InvalidEndpoint> {
        check_name(name, self.max_name_len, Field::Service)
    }
}

impl Default for EndpointLimits {
    fn default() -> Self {
        EndpointLimits {
            max_name_len: 128,
            max_unix_path_len: 108,
            max_metadata_entries: 32,
            max_metadata_bytes: 4096,
        }
    }
}

/// Why an endpoint was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, courier::Schema)]
#[non_exhaustive]
pub enum InvalidEndpoint {
    /// The service name is empty, too long, or has a character outside
    /// ASCII letters, digits and `-_.:`.
    ServiceName,
    /// The instance name is empty, too long, or has a character outside
    /// ASCII letters, digits and `-_.:`.
    InstanceName,
    /// The Unix socket path is empty or too long.
    Address,
    /// Too many metadata entries or bytes.
    TooMuchMetadata,
}

impl fmt::Display for InvalidEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            InvalidEndpoint::ServiceName => "invalid service name",
            InvalidEndpoint::InstanceName => "invalid instance name",
            InvalidEndpoint::Address => "invalid address",
            InvalidEndpoint::TooMuchMetadata => "too much metadata",
        })
    }
}

impl std::error::Error for InvalidEndpoint {}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint(service: &str) -> Endpoint {
        Endpoint::new(service, "i-1", Address::Tcp("127.0.0.1:1".parse().unwrap()))
    }

    #[test]
    fn names_are_checked_below_at_and_above_the_limit() {
        let limits = EndpointLimits {
            max_name_len: 4,
            ..EndpointLimits::default()
        };
        assert_eq!(endpoint("abc").validate(&limits), Ok(()));
        assert_eq!(endpoint("abcd").validate(&limits), Ok(()));
        assert_eq!(
            endpoint("abcde").validate(&limits),
            Err(InvalidEndpoint::ServiceName)
        );
        assert_eq!(
            endpoint("").validate(&limits),
            Err(InvalidEndpoint::ServiceName)
        );
        assert_eq!(
            endpoint("a b").validate(&limits),
            Err(InvalidEndpoint::ServiceName)
        );
    }

    #[test]
    fn metadata_bytes_are_checked_below_at_and_above_the_limit() {
        let limits = EndpointLimits {
            max_metadata_bytes: 4,
            ..EndpointLimits::default()
        };
        let at = endpoint("kv").with_metadata("ab", "cd");
        assert_eq!(at.validate(&limits), Ok(()));
        let below = endpoint("kv").with_metadata("ab", "c");
        assert_eq!(below.validate(&limits), Ok(()));
        let above = endpoint("kv").with_metadata("ab", "cde");
        assert_eq!(
            above.validate(&limits),
            Err(InvalidEndpoint::TooMuchMetadata)
        );
    }

    #[test]
    fn metadata_entries_are_checked_at_and_above_the_limit() {
        let limits = EndpointLimits {
            max_metadata_entries: 1,
            ..EndpointLimits::default()
        };
        let one = endpoint("kv").with_metadata("a", "1");
        assert_eq!(one.validate(&limits), Ok(()));
        let two = one.with_metadata("b", "2");
        assert_eq!(two.validate(&limits), Err(InvalidEndpoint::TooMuchMetadata));
    }

    /// The hand-written schema of `Address` says what serde writes.
    #[test]
    fn an_address_is_encoded_as_its_schema_says() {
        let v4 = Address::Tcp("127.0.0.1:7700".parse().unwrap());
        // Tcp (0), V4 (0), four octets, port 7700 as a varint.
        let bytes = postcard::to_allocvec(&v4).unwrap();
        assert_eq!(bytes, [0, 0, 127, 0, 0, 1, 0x94, 0x3c]);
        let v6 = Address::Tcp("[::1]:1".parse().unwrap());
        let bytes = postcard::to_allocvec(&v6).unwrap();
        let mut want = vec![0, 1];
        want.extend_from_slice(&[0; 15]);
        want.extend_from_slice(&[1, 1]);
        assert_eq!(bytes, want);
        let unix = Address::Unix("/s".into());
        assert_eq!(postcard::to_allocvec(&unix).unwrap(), [1, 2, b'/', b's']);
        for address in [v4, v6, unix] {
            let bytes = postcard::to_allocvec(&address).unwrap();
            assert_eq!(postcard::from_bytes::<Address>(&bytes).unwrap(), address);
        }
        use courier::Schema;
        let Shape::Enum(variants) = Address::SCHEMA else {
            panic!("an enum");
        };
        assert_eq!(variants.len(), 2);
    }
}
