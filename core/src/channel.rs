//! What a typed client calls through: one connection ([`Client`]) or
//! anything else that carries calls, such as a load balancer over many.
//!
//! # The model
//!
//! A [`service`](crate::service) client `XxxClient<C = Client>` holds a
//! channel `C` and turns each method into one of five kinds of call on it.
//! Every call names its method by [`MethodInfo`] — key, name, and whether
//! the service declared it `#[idempotent]` — so a channel that may re-send a
//! failed call knows statically whether that is safe. The call and stream
//! types are the channel's own (generic associated types): for [`Client`]
//! they are [`Call`], [`CallStream`], [`Upload`] and [`Notify`] themselves,
//! so the direct path costs nothing extra.
//!
//! A channel is cheap to clone (a typed client's `with_timeout` clones it).
//!
//! ```
//! #[courier::service]
//! pub trait Calc {
//!     #[idempotent]
//!     async fn add(&self, a: u32, b: u32) -> u32;
//! }
//!
//! // Any channel works; here, one in-memory connection.
//! fn calc_over<C: courier::Channel>(channel: C) -> CalcClient<C> {
//!     CalcClient::new(channel)
//! }
//! let (client_io, _server_io) = courier_mem::pair(1024);
//! let (client, _driver) = courier::Client::new(client_io);
//! let calc = calc_over(client);
//! assert!(CalcClient::METHODS[0].idempotent);
//! # drop(calc);
//! ```

use core::future::Future;
use core::time::Duration;

use futures_util::Stream;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::client::{Call, CallStream, Client, Notify, Upload};
use crate::error::CallError;
use crate::MethodInfo;

/// Carries a typed client's calls; see the [module docs](self).
///
/// Each method starts one call of `method`; nothing happens until the
/// returned future or stream is polled, and `timeout` (if any) counts from
/// then.
pub trait Channel: Clone {
    /// A unary call: resolves to the response or why there is none.
    type Call<'a, Req, Resp>: Future<Output = Result<Resp, CallError>> + 'a
    where
        Self: 'a,
        Req: Serialize + 'a,
        Resp: DeserializeOwned + 'a;

    /// A call answered with a stream of items (server or bidirectional
    /// streaming).
    type CallStream<'a, Req, T>: Stream<Item = Result<T, CallError>> + 'a
    where
        Self: 'a,
        Req: Serialize + 'a,
        T: DeserializeOwned + 'a;

    /// A client-streaming call: sends items, resolves to one response.
    type Upload<'a, Req, Resp>: Future<Output = Result<Resp, CallError>> + 'a
    where
        Self: 'a,
        Req: Serialize + 'a,
        Resp: DeserializeOwned + 'a;

    /// A notification: resolves once it is queued.
    type Notify<'a>: Future<Output = Result<(), CallError>> + 'a
    where
        Self: 'a;

    /// Starts a unary call.
    fn call<'a, Req, Resp>(
        &'a self,
        method: &'static MethodInfo,
        request: Req,
        timeout: Option<Duration>,
    ) -> Self::Call<'a, Req, Resp>
    where
        Req: Serialize + 'a,
        Resp: DeserializeOwned + 'a;

    /// Starts a server-streaming call.
    fn server_stream<'a, Req, T>(
        &'a self,
        method: &'static MethodInfo,
        request: Req,
        timeout: Option<Duration>,
    ) -> Self::CallStream<'a, Req, T>
    where
        Req: Serialize + 'a,
        T: DeserializeOwned + 'a;

    /// Starts a bidirectional call whose caller sends `items`.
    fn bidi_stream<'a, Req, S, T>(
        &'a self,
        method: &'static MethodInfo,
        request: Req,
        items: S,
        timeout: Option<Duration>,
    ) -> Self::CallStream<'a, Req, T>
    where
        Req: Serialize + 'a,
        S: Stream + Send + 'a,
        S::Item: Serialize,
        T: DeserializeOwned + 'a;

    /// Starts a client-streaming call whose caller sends `items`.
    fn client_stream<'a, Req, S, Resp>(
        &'a self,
        method: &'static MethodInfo,
        request: Req,
        items: S,
        timeout: Option<Duration>,
    ) -> Self::Upload<'a, Req, Resp>
    where
        Req: Serialize + 'a,
        S: Stream + Send + 'a,
        S::Item: Serialize,
        Resp: DeserializeOwned + 'a;

    /// Sends a notification.
    fn notify<Req: Serialize>(
        &self,
        method: &'static MethodInfo,
        request: &Req,
    ) -> Self::Notify<'_>;
}

impl Channel for Client {
    type Call<'a, Req, Resp>
        = Call<'a, Req, Resp>
    where
        Req: Serialize + 'a,
        Resp: DeserializeOwned + 'a;
    type CallStream<'a, Req, T>
        = CallStream<'a, Req, T>
    where
        Req: Serialize + 'a,
        T: DeserializeOwned + 'a;
    type Upload<'a, Req, Resp>
        = Upload<'a, Req, Resp>
    where
        Req: Serialize + 'a,
        Resp: DeserializeOwned + 'a;
    type Notify<'a> = Notify<'a>;

    fn call<'a, Req, Resp>(
        &'a self,
        method: &'static MethodInfo,
        request: Req,
        timeout: Option<Duration>,
    ) -> Call<'a, Req, Resp>
    where
        Req: Serialize + 'a,
        Resp: DeserializeOwned + 'a,
    {
        Client::call(self, method.key, request)
            .with_optional_timeout(timeout)
            .with_method(method)
    }

    fn server_stream<'a, Req, T>(
        &'a self,
        method: &'static MethodInfo,
        request: Req,
        timeout: Option<Duration>,
    ) -> CallStream<'a, Req, T>
    where
        Req: Serialize + 'a,
        T: DeserializeOwned + 'a,
    {
        Client::server_stream(self, method.key, request)
            .with_optional_timeout(timeout)
            .with_method(method)
    }

    fn bidi_stream<'a, Req, S, T>(
        &'a self,
        method: &'static MethodInfo,
        request: Req,
        items: S,
        timeout: Option<Duration>,
    ) -> CallStream<'a, Req, T>
    where
        Req: Serialize + 'a,
        S: Stream + Send + 'a,
        S::Item: Serialize,
        T: DeserializeOwned + 'a,
    {
        Client::bidi_stream(self, method.key, request, items)
            .with_optional_timeout(timeout)
            .with_method(method)
    }

    fn client_stream<'a, Req, S, Resp>(
        &'a self,
        method: &'static MethodInfo,
        request: Req,
        items: S,
        timeout: Option<Duration>,
    ) -> Upload<'a, Req, Resp>
    where
        Req: Serialize + 'a,
        S: Stream + Send + 'a,
        S::Item: Serialize,
        Resp: DeserializeOwned + 'a,
    {
        Client::client_stream(self, method.key, request, items)
            .with_optional_timeout(timeout)
            .with_method(method)
    }

    fn notify<Req: Serialize>(&self, method: &'static MethodInfo, request: &Req) -> Notify<'_> {
        Client::notify(self, method.key, request)
    }
}
