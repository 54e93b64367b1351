//! The procedural macros of courier: [`macro@service`] and
//! [`derive(Schema)`](derive@Schema). Use them through `courier`
//! (`#[courier::service]`, `#[derive(courier::Schema)]`); the code they
//! generate names `::courier`.

use proc_macro::TokenStream;

mod schema;
mod service;

/// Turns a trait into a service: the trait to implement, a typed client and
/// a server.
///
/// ```
/// use serde::{Deserialize, Serialize};
///
/// /// A calculator.
/// #[courier::service]
/// pub trait Calc {
///     /// Adds.
///     async fn add(&self, a: u64, b: u64) -> u64;
///     /// Looks up a value; safe to send twice.
///     #[idempotent]
///     async fn get(&self, key: String) -> Option<Vec<u8>>;
///     /// Divides; an application error travels as a typed value.
///     async fn div(&self, a: u64, b: u64) -> Result<u64, String>;
///     /// Returns nothing.
///     async fn ping(&self);
///     /// Any type that is serde and has a wire schema.
///     async fn area(&self, rect: Rect) -> u64;
/// }
///
/// #[derive(Serialize, Deserialize, courier::Schema)]
/// pub struct Rect {
///     pub width: u32,
///     pub height: u32,
/// }
///
/// struct Calculator;
///
/// impl Calc for Calculator {
///     async fn add(&self, a: u64, b: u64) -> u64 {
///         a + b
///     }
///     async fn get(&self, key: String) -> Option<Vec<u8>> {
///         (key == "one").then(|| vec![1])
///     }
///     async fn div(&self, a: u64, b: u64) -> Result<u64, String> {
///         a.checked_div(b).ok_or_else(|| "division by zero".to_string())
///     }
///     async fn ping(&self) {}
///     async fn area(&self, rect: Rect) -> u64 {
///         u64::from(rect.width) * u64::from(rect.height)
///     }
/// }
///
/// let (client_io, server_io) = courier_mem::pair(64 * 1024);
/// let server = courier::ServerBuilder::new().build(server_io, CalcServer::new(Calculator));
/// let (client, driver) = courier::Client::new(client_io);
/// let calc = CalcClient::new(client);
///
/// futures::executor::block_on(async move {
///     let calls = async move {
///         assert_eq!(calc.add(2, 3).await, Ok(5));
///         assert_eq!(calc.get("one".to_string()).await, Ok(Some(vec![1])));
///         assert_eq!(calc.div(1, 0).await, Ok(Err("division by zero".to_string())));
///         assert_eq!(calc.ping().await, Ok(()));
///         assert_eq!(calc.area(Rect { width: 3, height: 4 }).await, Ok(12));
///     };
///     let (_, driver_result, server_result) = futures::join!(calls, driver, server);
///     driver_result.unwrap();
///     server_result.unwrap();
/// });
/// ```
///
/// # The declaration
///
/// Every method is an `async fn` taking `&self` and then named parameters
/// (`name: Type`, no patterns); no return type means `()`. Doc comments are
/// kept. `#[idempotent]` marks a method that may safely run twice (it
/// changes nothing but `METHODS`). Generic traits and methods, supertraits,
/// default bodies and other attributes are rejected. Parameters are owned
/// values (`String`, not `&str`): the server decodes them from the request.
///
/// Every parameter and the return type must be serde
/// (`Serialize + DeserializeOwned`, encoded with postcard) and have a wire
/// schema ([`Schema`](derive@Schema): `#[derive(courier::Schema)]`, built in
/// for integers, `bool`, `char`, floats, `String`, `Vec<T>`, `Option<T>`,
/// `Result<T, E>`, tuples, arrays, maps, sets, `Box<T>`, `Duration`).
///
/// # Streams, notifications and the handler context
///
/// A method's *mode* follows from its signature (and is part of its key):
///
/// | declared | mode | the caller calls | and gets |
/// |---|---|---|---|
/// | plain | unary | `calc.add(1, 2)` | `Call`: `Result<u64, CallError>` |
/// | `-> courier::BoxStream<T>` | server streaming | `feed.ticks(5)` | `CallStream`: a `Stream` of `Result<T, CallError>` |
/// | a parameter `items: courier::Streaming<T>` | client streaming | `feed.sum(any_stream_of_t)` | `Upload`: `Result<Ret, CallError>` |
/// | both | bidirectional | `feed.echo(any_stream_of_t)` | `CallStream` |
/// | `#[oneway]`, no return type | notification | `feed.log(line)` | `Notify`: `Result<(), CallError>` once queued |
///
/// The implementation receives a `Streaming<T>` (a `Stream` of
/// `Result<T, CallError>`, ending with `None` after the caller's last item)
/// and returns a server stream boxed: `Box::pin(stream)`. Credit flow
/// control is automatic on both sides (a slow consumer stops its producer
/// within one window; see `CallStream::with_credit` and
/// `ServerBuilder::stream_credit`); how each stream ends is typed
/// (PROTOCOL.md R11). A first parameter `ctx: courier::CallContext` gives the
/// handler its call's id, deadline, peer and cancellation signal; it is not
/// sent by the caller, and `client.with_context(&ctx)` passes the deadline on.
///
/// ```
/// use courier::{BoxStream, CallContext, Streaming};
/// use futures::StreamExt;
///
/// #[courier::service]
/// pub trait Feed {
///     /// Server streaming: 0, 1, ..., n - 1.
///     async fn ticks(&self, n: u32) -> BoxStream<u32>;
///     /// Client streaming: the sum of the caller's items.
///     async fn sum(&self, items: Streaming<u64>) -> u64;
///     /// Bidirectional: each item back, doubled.
///     async fn double(&self, items: Streaming<u64>) -> BoxStream<u64>;
///     /// A notification: never answered.
///     #[oneway]
///     async fn log(&self, line: String);
///     /// With the handler context (not sent by the caller).
///     async fn whoami(&self, ctx: CallContext) -> u32;
/// }
///
/// struct Imp;
/// impl Feed for Imp {
///     async fn ticks(&self, n: u32) -> BoxStream<u32> {
///         Box::pin(futures::stream::iter(0..n))
///     }
///     async fn sum(&self, items: Streaming<u64>) -> u64 {
///         items.map(|item| item.unwrap_or(0)).fold(0, |a, b| async move { a + b }).await
///     }
///     async fn double(&self, items: Streaming<u64>) -> BoxStream<u64> {
///         Box::pin(items.map(|item| item.map_or(0, |v| v * 2)))
///     }
///     async fn log(&self, line: String) {
///         assert_eq!(line, "hello");
///     }
///     async fn whoami(&self, ctx: CallContext) -> u32 {
///         ctx.request_id()
///     }
/// }
///
/// let (client_io, server_io) = courier_mem::pair(64 * 1024);
/// let server = courier::ServerBuilder::new().build(server_io, FeedServer::new(Imp));
/// let (client, driver) = courier::Client::new(client_io);
/// let feed = FeedClient::new(client);
/// futures::executor::block_on(async move {
///     let calls = async move {
///         let ticks: Vec<_> = feed.ticks(3).collect().await;
///         assert_eq!(ticks, [Ok(0), Ok(1), Ok(2)]);
///         assert_eq!(feed.sum(futures::stream::iter([1, 2, 3])).await, Ok(6));
///         let doubled: Vec<_> = feed.double(futures::stream::iter([5, 6])).collect().await;
///         assert_eq!(doubled, [Ok(10), Ok(12)]);
///         feed.log("hello".to_string()).await.unwrap();
///         assert!(feed.whoami().await.is_ok());
///     };
///     let (_, driver_result, server_result) = futures::join!(calls, driver, server);
///     driver_result.unwrap();
///     server_result.unwrap();
/// });
/// ```
///
/// # What it generates
///
/// For `trait Calc` above:
///
/// - **`trait Calc: Send + Sync + 'static`**, each method desugared to
///   `fn add(&self, a: u64, b: u64) -> impl Future<Output = u64> + Send`.
///   Implement it with `async fn` (the future must be `Send`).
/// - **`struct CalcClient`** (`Clone`, `Debug`, with the trait's
///   visibility), a typed client:
///   - `CalcClient::new(client: courier::Client)`;
///   - `calc.with_timeout(Duration)`: a copy whose calls carry that timeout;
///   - `calc.client()`: the untyped [`Client`] underneath;
///   - one method per RPC with the declared parameters, returning
///     `courier::Call<'_, Args, Ret>` with `Args` the tuple of the
///     parameter types: `calc.add(1, 2)` is a
///     `Call<'_, (u64, u64), u64>`, a future of `Result<u64, CallError>`.
///     For `div` it is `Result<Result<u64, String>, CallError>`: the outer
///     [`CallError`] is transport and protocol trouble, the inner `Result`
///     the method's own, so an application error is never confused with
///     a lost connection;
///   - one key constant per method, the name upper-cased: `CalcClient::ADD`,
///     `CalcClient::GET`, ... (a [`MethodKey`]), derived at compile time by
///     [`MethodKey::from_schema`] from the service name, the method name
///     and the wire schemas of the argument tuple and of the return type
///     (PROTOCOL.md §5). Client and server that disagree on a signature get
///     [`RemoteError::UnknownMethod`];
///   - `CalcClient::METHODS: &[MethodInfo]` ([`MethodInfo`]), every method in declaration
///     order with its service's and its own name, key, `idempotent` flag
///     and whether it returns a `Result` (`fallible`); each call is named
///     with its entry ([`Call::with_method`]) for the `tracing` feature's
///     spans.
/// - **`struct CalcServer<S>`** (`Clone`), which serves an implementation:
///   `CalcServer::new(imp)`, or `CalcServer::from_arc(Arc<Imp>)` to share
///   one, and implements [`Service`] for [`Server`]/[`ServerBuilder`]: it
///   decodes the arguments (leftover bytes are
///   [`RemoteError::BadRequest`]) and runs the method; its
///   `Service::method_info` finds a key's entry in `METHODS` (names for
///   the server's tracing spans).
///
/// The client also has `with_context(&CallContext)`: a copy whose calls
/// carry the time a handler's call has left.
///
/// The client's methods and the constants `new`, `with_timeout`,
/// `with_context`, `client` and `METHODS` share one namespace, so a method
/// cannot be called `new`, `with_timeout`, `with_context`, `client` or
/// `methods`.
///
/// # Calls borrow the client
///
/// `Call<'_, ..>` borrows the `CalcClient` it came from, so
/// `tokio::spawn(calc.add(1, 2))` does not compile (the future is not
/// `'static`). [`Call::into_owned`] turns the call into one that owns a
/// clone of the client (cheap: the client is a shared handle, an `Arc`
/// inside), which can be spawned; or move a clone into the task yourself
/// (also the way for streaming calls and notifications):
///
/// ```
/// # use core::future::Future;
/// # #[courier::service]
/// # trait Calc { async fn add(&self, a: u64, b: u64) -> u64; }
/// # fn spawn<F: Future + Send + 'static>(_task: F) {}
/// # fn example(calc: &CalcClient) {
/// spawn(calc.add(1, 2).into_owned());
/// let c = calc.clone();
/// spawn(async move { c.add(1, 2).await });
/// # }
/// ```
///
/// The borrowing form stays the default because it costs nothing per call;
/// `into_owned` adds one reference-count increment.
///
/// [`Client`]: client/struct.Client.html
/// [`CallError`]: error/enum.CallError.html
/// [`Call::with_method`]: struct.Call.html#method.with_method
/// [`Call::into_owned`]: struct.Call.html#method.into_owned
/// [`MethodKey`]: wire/struct.MethodKey.html
/// [`MethodKey::from_schema`]: wire/struct.MethodKey.html#method.from_schema
/// [`RemoteError::UnknownMethod`]: error/enum.RemoteError.html#variant.UnknownMethod
/// [`RemoteError::BadRequest`]: error/enum.RemoteError.html#variant.BadRequest
/// [`Service`]: server/trait.Service.html
/// [`Server`]: server/struct.Server.html
/// [`MethodInfo`]: struct.MethodInfo.html
/// [`Schema`]: derive.Schema.html
/// [`ServerBuilder`]: server/struct.ServerBuilder.html
#[proc_macro_attribute]
pub fn service(attr: TokenStream, item: TokenStream) -> TokenStream {
    service::expand(attr.into(), item.into())
        .unwrap_or_else(syn::Error::into_compile_error)
        .into()
}

/// Turns a trait into a service served without an allocator, by
/// `courier::heap_free::HeapFreeServer`.
///
/// The declaration follows the rules of [`macro@service`] (unary and
/// `#[oneway]` methods; no streams, no `CallContext`). For `trait Calc` it
/// generates:
///
/// - **`trait Calc`** without `Send`, `Sync` or `'static` bounds, each
///   method `fn add(&self, a: u64, b: u64) -> impl Future<Output = u64>`:
///   implement it with `async fn`; the futures may borrow the device and
///   need not be `Send`;
/// - **`struct CalcKeys`** with one key constant per method (`CalcKeys::ADD`)
///   and `METHODS`: the same keys as `CalcClient::ADD` of the std macro for
///   the same declaration, so a std client calls a heap-free server (use
///   `heapless::Vec<T, N>` and `heapless::String<N>` where the std side has
///   `Vec<T>` and `String`: the wire schemas are the same);
/// - **`struct CalcHeapFree<'s, S>`**, `CalcHeapFree::new(&device)`, which
///   implements `courier::heap_free::HeapFreeService`: it decodes a request
///   into the enum `CalcHeapFreeArgs` (one variant per method) and runs the
///   method in one `async` block whose value, the enum `CalcHeapFreeReply`,
///   is encoded as the method's return value. No handler is boxed: the
///   driver holds that one future, whose size is the largest method's.
///
/// ```
/// #[courier::heap_free_service]
/// pub trait Calc {
///     async fn add(&self, a: u64, b: u64) -> u64;
/// }
/// assert_eq!(
///     CalcKeys::ADD,
///     courier::MethodKey::from_schema(
///         "Calc",
///         "add",
///         <(u64, u64) as courier::Schema>::SCHEMA,
///         <u64 as courier::Schema>::SCHEMA,
///     )
/// );
/// ```
#[proc_macro_attribute]
pub fn heap_free_service(attr: TokenStream, item: TokenStream) -> TokenStream {
    service::expand_heap_free(attr.into(), item.into())
        .unwrap_or_else(syn::Error::into_compile_error)
        .into()
}

/// Derives `courier::Schema`: the wire schema of a struct or enum, from its
/// fields.
///
/// A struct (named, tuple, newtype or unit) is the tuple of its fields'
/// schemas; an enum lists, for each variant, its fields' schemas. Names are
/// not part of the schema (they do not go on the wire): renaming a field
/// keeps every method key, changing a field's type or adding one changes
/// them. Type parameters get a `Schema` bound.
///
/// serde attributes that change the wire format (`skip`, `flatten`,
/// `transparent`, `untagged`, `tag`, `with`, `into`, ...) are refused:
/// implement `Schema` by hand for such a type.
///
/// ```
/// use courier::schema::Shape;
/// use courier::Schema;
///
/// #[derive(Schema)]
/// enum Reply<T> {
///     Empty,
///     One(T),
///     Many { items: Vec<T>, more: bool },
/// }
///
/// assert_eq!(
///     *<Reply<u8>>::SCHEMA,
///     Shape::Enum(&[
///         &[],
///         &[&Shape::U8],
///         &[&Shape::Seq(&Shape::U8), &Shape::Bool],
///     ]),
/// );
/// ```
#[proc_macro_derive(Schema)]
pub fn derive_schema(input: TokenStream) -> TokenStream {
    syn::parse::<syn::DeriveInput>(input)
        .and_then(schema::expand)
        .unwrap_or_else(syn::Error::into_compile_error)
        .into()
}
