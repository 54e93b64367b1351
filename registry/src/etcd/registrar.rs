//! [`EtcdRegistrar`]: registration under an etcd lease.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use etcd_client::{Client, LeaseKeepAliveStream, LeaseKeeper, PutOptions};

use super::runtime::InRuntime;
use super::{entry, Shared};
use crate::endpoint::Endpoint;
use crate::registration::{LeaseId, Registrar, RegistrarError, RegistrarFuture};

/// A [`Registrar`] on etcd, made by [`Etcd::registrar`](super::Etcd::registrar):
///
/// - `register` grants a lease of the TTL (rounded up to whole seconds, at
///   least 1) and puts the endpoint's key under it;
/// - `keep_alive` renews the lease over one etcd keep-alive stream, opened
///   on first use and again after it broke; a lease etcd no longer knows
///   (it expired during a partition, or etcd lost its data) is
///   [`RegistrarError::LeaseLost`];
/// - `deregister` revokes the lease, which deletes the key.
///
/// A request etcd does not answer within the configured request timeout is
/// [`RegistrarError::Unavailable`]. An endpoint that breaks the configured
/// limits, or an etcd that refuses the credentials, is
/// [`RegistrarError::Refused`].
pub struct EtcdRegistrar {
    client: Client,
    shared: Arc<Shared>,
    /// The open keep-alive stream and the lease it renews.
    keeper: Option<(i64, LeaseKeeper, LeaseKeepAliveStream)>,
}

impl std::fmt::Debug for EtcdRegistrar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdRegistrar")
            .field("lease", &self.keeper.as_ref().map(|k| k.0))
            .finish_non_exhaustive()
    }
}

impl EtcdRegistrar {
    pub(crate) fn new(client: Client, shared: Arc<Shared>) -> Self {
        EtcdRegistrar {
            client,
            shared,
            keeper: None,
        }
    }

    /// `future` in the runtime, boxed, failing as unavailable past the
    /// request timeout.
    fn boxed<'a, T, F>(&self, future: F) -> RegistrarFuture<'a, T>
    where
        F: Future<Output = Result<T, RegistrarError>> + Send + 'a,
        T: 'a,
    {
        let timeout = self.shared.config.request_timeout;
        Box::pin(InRuntime::new(self.shared.runtime.clone(), async move {
            match tokio::time::timeout(timeout, future).await {
                Ok(result) => result,
                Err(_) => Err(RegistrarError::Unavailable(format!(
                    "etcd did not answer within {timeout:?}"
                ))),
            }
        }))
    }
}

impl Registrar for EtcdRegistrar {
    fn register<'a>(
        &'a mut self,
        endpoint: &'a Endpoint,
        ttl: Duration,
    ) -> RegistrarFuture<'a, LeaseId> {
        let shared = self.shared.clone();
        let mut client = self.client.clone();
        self.keeper = None;
        self.boxed(async move {
            endpoint
                .validate(&shared.config.limits)
                .map_err(|e| RegistrarError::Refused(e.to_string()))?;
            let lease = client
                .lease_grant(ttl_seconds(ttl), None)
                .await
                .map_err(classify)?;
            let key = entry::key(&shared.config.prefix, &endpoint.service, &endpoint.instance);
            let put = PutOptions::new().with_lease(lease.id());
            client
                .put(key, entry::encode(endpoint), Some(put))
                .await
                .map_err(classify)?;
            u64::try_from(lease.id()).map_err(|_| RegistrarError::LeaseLost)
        })
    }

    fn keep_alive(&mut self, lease: LeaseId) -> RegistrarFuture<'_, ()> {
        let Ok(id) = i64::try_from(lease) else {
            return Box::pin(std::future::ready(Err(RegistrarError::LeaseLost)));
        };
        if self.keeper.as_ref().is_some_and(|k| k.0 != id) {
            self.keeper = None;
        }
        let timeout = self.shared.config.request_timeout;
        let runtime = self.shared.runtime.clone();
        Box::pin(InRuntime::new(runtime, async move {
            let renewal = tokio::time::timeout(timeout, self.renew(id)).await;
            let result = renewal.unwrap_or_else(|_| {
                Err(RegistrarError::Unavailable(format!(
                    "etcd did not answer within {timeout:?}"
                )))
            });
            if result.is_err() {
                // A stream that failed once is not trusted again.
                self.keeper = None;
            }
            result
        }))
    }

    fn deregister(&mut self, lease: LeaseId) -> RegistrarFuture<'_, ()> {
        self.keeper = None;
        let mut client = self.client.clone();
        self.boxed(async move {
            let Ok(id) = i64::try_from(lease) else {
                return Ok(());
            };
            match client.lease_revoke(id).await {
                Ok(_) => Ok(()),
                Err(e) => match classify(e) {
                    RegistrarError::LeaseLost => Ok(()),
                    other => Err(other),
                },
            }
        })
    }
}

impl EtcdRegistrar {
    /// One renewal of lease `id`: on the open stream, or by opening one
    /// (which renews once).
    async fn renew(&mut self, id: i64) -> Result<(), RegistrarError> {
        if let Some((_, keeper, stream)) = &mut self.keeper {
            keeper.keep_alive().await.map_err(classify)?;
            return match stream.message().await.map_err(classify)? {
                Some(response) if response.ttl() > 0 => Ok(()),
                Some(_) => Err(RegistrarError::LeaseLost),
                None => Err(RegistrarError::Unavailable(
                    "etcd closed the keep-alive stream".into(),
                )),
            };
        }
        let (keeper, stream) = self.client.lease_keep_alive(id).await.map_err(classify)?;
        self.keeper = Some((id, keeper, stream));
        Ok(())
    }
}

/// etcd's TTLs are whole seconds: round up, at least 1.
fn ttl_seconds(ttl: Duration) -> i64 {
    let whole = ttl
        .as_secs()
        .saturating_add(u64::from(ttl.subsec_nanos() > 0));
    i64::try_from(whole.max(1)).unwrap_or(i64::MAX)
}

/// Maps an etcd client error onto what the registration driver does next.
fn classify(error: etcd_client::Error) -> RegistrarError {
    use tonic::Code;
    match &error {
        // etcd-client's own word for a keep-alive answered with TTL 0.
        etcd_client::Error::LeaseKeepAliveError(why) if why.contains("not found") => {
            RegistrarError::LeaseLost
        }
        etcd_client::Error::GRpcStatus(status) => match status.code() {
            Code::NotFound => RegistrarError::LeaseLost,
            Code::PermissionDenied | Code::Unauthenticated | Code::InvalidArgument => {
                RegistrarError::Refused(error.to_string())
            }
            _ => RegistrarError::Unavailable(error.to_string()),
        },
        _ => RegistrarError::Unavailable(error.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::ttl_seconds;
    use std::time::Duration;

    #[test]
    fn ttls_round_up_to_whole_seconds_of_at_least_one() {
        assert_eq!(ttl_seconds(Duration::ZERO), 1);
        assert_eq!(ttl_seconds(Duration::from_millis(300)), 1);
        assert_eq!(ttl_seconds(Duration::from_secs(1)), 1);
        assert_eq!(ttl_seconds(Duration::from_millis(1001)), 2);
        assert_eq!(ttl_seconds(Duration::MAX), i64::MAX);
    }
}
