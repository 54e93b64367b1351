//! What a [`service`](crate::service) client tells about its methods.

use crate::MethodKey;

/// One method of a service: its name, key and properties.
///
/// Each client that [`service`](crate::service) generates lists its methods
/// in declaration order as `METHODS` (`CalcClient::METHODS`), for code that
/// routes or retries calls by method, such as a load balancer.
///
/// ```
/// #[courier::service]
/// trait Store {
///     #[idempotent]
///     async fn get(&self, key: u32) -> Option<u64>;
///     async fn put(&self, key: u32, value: u64);
/// }
///
/// let get = StoreClient::METHODS[0];
/// assert_eq!((get.name, get.key, get.idempotent), ("get", StoreClient::GET, true));
/// assert!(!StoreClient::METHODS[1].idempotent);
/// assert_eq!(get.service, "Store");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct MethodInfo {
    /// The service's name as declared (the trait's name, without `r#`).
    pub service: &'static str,
    /// The method's name as declared (without `r#`).
    pub name: &'static str,
    /// The key requests for the method carry.
    pub key: MethodKey,
    /// Whether the declaration marks the method `#[idempotent]`: running it
    /// twice has the effect of running it once, so a call whose outcome is
    /// unknown (the connection broke) may be sent again.
    pub idempotent: bool,
    /// Whether the method returns a `Result`, whose `Err` is the
    /// application's own error (the inner `Result` of a call); tracing
    /// records such a reply as outcome `app_error`.
    pub fallible: bool,
}

impl MethodInfo {
    /// A method that is not marked idempotent nor fallible, of no named
    /// service.
    pub const fn new(name: &'static str, key: MethodKey) -> Self {
        Self {
            service: "",
            name,
            key,
            idempotent: false,
            fallible: false,
        }
    }

    /// The same method, of the service named `service`.
    pub const fn with_service(self, service: &'static str) -> Self {
        Self { service, ..self }
    }

    /// The same method, returning a `Result` or not (see
    /// [`fallible`](Self::fallible)).
    pub const fn with_fallible(self, fallible: bool) -> Self {
        Self { fallible, ..self }
    }

    /// The same method, marked idempotent or not.
    pub const fn with_idempotent(self, idempotent: bool) -> Self {
        Self { idempotent, ..self }
    }
}
