//! How to reach etcd and how to behave when it is not there.

use std::fmt;
use std::time::Duration;

use tokio::runtime::Handle;

use crate::endpoint::EndpointLimits;

/// How [`Etcd`](super::Etcd) reaches etcd, where it keeps registrations, and
/// how it retries. Built with [`EtcdConfig::new`] and the methods below.
#[derive(Clone)]
pub struct EtcdConfig {
    pub(crate) endpoints: Vec<String>,
    pub(crate) prefix: String,
    pub(crate) user: Option<(String, String)>,
    pub(crate) connect_timeout: Duration,
    pub(crate) request_timeout: Duration,
    pub(crate) keep_alive_interval: Duration,
    pub(crate) keep_alive_timeout: Duration,
    pub(crate) retry_min: Duration,
    pub(crate) retry_max: Duration,
    pub(crate) page_size: i64,
    pub(crate) max_value_len: usize,
    pub(crate) limits: EndpointLimits,
    pub(crate) runtime: Option<Handle>,
}

impl fmt::Debug for EtcdConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the password.
        f.debug_struct("EtcdConfig")
            .field("endpoints", &self.endpoints)
            .field("prefix", &self.prefix)
            .field("user", &self.user.as_ref().map(|(user, _)| user))
            .field("request_timeout", &self.request_timeout)
            .finish_non_exhaustive()
    }
}

impl EtcdConfig {
    /// The default prefix of every key: `/courier/services`.
    pub const DEFAULT_PREFIX: &'static str = "/courier/services";

    /// A configuration for the etcd members at `endpoints` (URLs such as
    /// `http://127.0.0.1:2379`), with the defaults listed on each method.
    pub fn new<I, S>(endpoints: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        EtcdConfig {
            endpoints: endpoints.into_iter().map(Into::into).collect(),
            prefix: Self::DEFAULT_PREFIX.to_owned(),
            user: None,
            connect_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(5),
            keep_alive_interval: Duration::from_secs(5),
            keep_alive_timeout: Duration::from_secs(5),
            retry_min: Duration::from_millis(50),
            retry_max: Duration::from_secs(5),
            page_size: 1000,
            max_value_len: 16 * 1024,
            limits: EndpointLimits::default(),
            runtime: None,
        }
    }

    /// The prefix of every key (default [`DEFAULT_PREFIX`](Self::DEFAULT_PREFIX));
    /// trailing `/`s are removed. Keys are `<prefix>/<service>/<instance>`.
    #[must_use]
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        let prefix = prefix.into();
        self.prefix = prefix.trim_end_matches('/').to_owned();
        self
    }

    /// Authenticates as `user` (default: no authentication).
    #[must_use]
    pub fn user(mut self, user: impl Into<String>, password: impl Into<String>) -> Self {
        self.user = Some((user.into(), password.into()));
        self
    }

    /// How long one connection attempt may take (default 2 s).
    #[must_use]
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How long one request (a range read, opening a watch, a lease
    /// operation) may take before it counts as unavailable (default 5 s).
    #[must_use]
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// HTTP/2 pings every `interval`, the connection dropped when one is not
    /// answered within `timeout` (default 5 s and 5 s): how a watch notices
    /// a silent partition.
    #[must_use]
    pub fn keep_alive(mut self, interval: Duration, timeout: Duration) -> Self {
        self.keep_alive_interval = interval;
        self.keep_alive_timeout = timeout;
        self
    }

    /// Retries a failed step after `min`, doubling up to `max` (default
    /// 50 ms up to 5 s); a success starts again from `min`.
    #[must_use]
    pub fn retry(mut self, min: Duration, max: Duration) -> Self {
        self.retry_min = min;
        self.retry_max = max.max(min);
        self
    }

    /// How many keys one range read returns; a snapshot of more is read in
    /// pages, all at the snapshot's revision (default 1000, at least 1).
    #[must_use]
    pub fn page_size(mut self, keys: u32) -> Self {
        self.page_size = i64::from(keys.max(1));
        self
    }

    /// The longest value read as an endpoint, in bytes; a longer one is
    /// skipped and reported (default 16 KiB).
    #[must_use]
    pub fn max_value_len(mut self, bytes: usize) -> Self {
        self.max_value_len = bytes;
        self
    }

    /// The limits each endpoint read or registered is checked against
    /// (default [`EndpointLimits::default`]).
    #[must_use]
    pub fn limits(mut self, limits: EndpointLimits) -> Self {
        self.limits = limits;
        self
    }

    /// The tokio runtime the etcd client runs on, entered on every poll, so
    /// that watches and registrars can be polled from any executor. It must
    /// be running (a multi-threaded runtime, or one being driven elsewhere)
    /// with its time driver enabled. Default: the runtime
    /// [`Etcd::connect`](super::Etcd::connect) is polled in.
    #[must_use]
    pub fn runtime(mut self, handle: Handle) -> Self {
        self.runtime = Some(handle);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::EtcdConfig;

    #[test]
    fn debug_output_never_shows_the_password() {
        let config = EtcdConfig::new(["http://127.0.0.1:2379"]).user("root", "s3cret-pw");
        let shown = format!("{config:?}");
        assert!(shown.contains("root"), "{shown}");
        assert!(!shown.contains("s3cret-pw"), "{shown}");
    }

    #[test]
    fn the_prefix_loses_trailing_slashes() {
        assert_eq!(EtcdConfig::new(["x"]).prefix("/a/b//").prefix, "/a/b");
        assert_eq!(EtcdConfig::new(["x"]).prefix, "/courier/services");
    }
}
