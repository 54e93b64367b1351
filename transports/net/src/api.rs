//! The free-function API of a stream transport on one runtime, generated
//! once so that every transport and runtime offers the same one.

/// Defines, in the calling module, the standard API of a stream transport
/// on one runtime — the API `courier_tcp`, `courier_tcp::tokio`,
/// `courier_unix` and `courier_unix::tokio` all have — from a [`Dial`]
/// and a [`Listener`] implementation:
///
/// | item | what |
/// |---|---|
/// | `Conn`, `Driver<Tm = timer>` | the connection and the client driver types |
/// | `connect(addr)` | a client with default settings and the runtime's timer |
/// | `connect_with(addr, builder)` | a client from a [`courier::ClientBuilder`] |
/// | `connect_stream(addr)` | only the connected stream, for custom framing or tests |
/// | `connect_reconnecting(addr, policy)` | a client that re-dials after a lost connection |
/// | `Connector<A>` | the [`Connector`] of the dialer, for [`courier::ClientBuilder::build_reconnecting`] |
/// | `builder()` | a [`ServeBuilder`] with the runtime's timer (and, with `spawner`, its [`SpawnEach`]) |
/// | `serve(listener, service)` | a [`Serve`] future with default settings |
/// | `serve_addr(addr, service)` | binds, then serves |
///
/// The parameters:
///
/// - `dialer`: a `Default` type implementing [`Dial`]`<A>` for every
///   address `A` the transport accepts, with `Conn = conn` and
///   `Error = error`;
/// - `listener`: a [`Listener`] type with an inherent
///   `async fn bind<A: addr>(addr: A) -> Result<Self, error>`;
/// - `conn`: the connection type (`FuturesIo` or `TokioIo` from
///   [`courier::io`] around `stream`, or any [`courier::Transport`] with an
///   `into_inner(self) -> stream` method);
/// - `stream`: the raw stream type, returned by `connect_stream`;
/// - `error`: the error of dialing and binding;
/// - `timer`: the runtime's [`courier::Timer`] (`Default`), used by
///   `connect`, `connect_reconnecting` and `builder`;
/// - `addr`: the bound every address satisfies, as a path;
/// - `spawner` (optional): a function `fn() -> SpawnEach` giving the
///   runtime's spawner where one is available, such as
///   `courier_net::tokio::runtime_spawner` (feature `tokio`). With it, `builder()` and `serve` spawn each connection (and
///   `serve` needs a `Send + 'static` service); without it, connections
///   run inside the `Serve` future.
///
/// The generated items call the generic [`connect_with`], [`Connector`]
/// and [`ServeBuilder`], so a transport that prefers its own API can use
/// those directly; see [Writing a transport](crate#writing-a-transport).
///
/// [`Dial`]: crate::Dial
/// [`Listener`]: crate::Listener
/// [`Connector`]: crate::Connector
/// [`connect_with`]: crate::connect_with
/// [`ServeBuilder`]: crate::ServeBuilder
/// [`Serve`]: crate::Serve
/// [`SpawnEach`]: crate::SpawnEach
#[macro_export]
macro_rules! transport_api {
    (
        dialer: $dialer:ty,
        listener: $listener:ty,
        conn: $conn:ty,
        stream: $stream:ty,
        error: $error:ty,
        timer: $timer:ty,
        addr: $bound:path
        $(, spawner: $spawner:path)? $(,)?
    ) => {
        /// A client-side or accepted connection, as a
        /// [`courier::Transport`].
        pub type Conn = $conn;

        /// The client driver of a [`Conn`]; poll it for calls to make
        /// progress.
        pub type Driver<Tm = $timer> = $crate::__private::courier::ClientDriver<Conn, Tm>;

        /// Dials an address again on every attempt of a reconnecting
        /// client ([`courier::ClientBuilder::build_reconnecting`]).
        pub type Connector<A> = $crate::Connector<$dialer, A>;

        /// Connects to `addr` and returns only the stream (for custom
        /// framing or tests).
        pub async fn connect_stream<A: $bound>(addr: A) -> ::core::result::Result<$stream, $error>
        where
            $dialer: $crate::Dial<A, Conn = Conn, Error = $error>,
        {
            let dialer = <$dialer as ::core::default::Default>::default();
            let conn = $crate::Dial::dial(&dialer, addr).await?;
            ::core::result::Result::Ok(conn.into_inner())
        }

        /// Connects to `addr`: a client with default settings and the
        /// runtime's timer (so call timeouts are also checked locally), and
        /// the driver to poll.
        pub async fn connect<A: $bound>(
            addr: A,
        ) -> ::core::result::Result<($crate::__private::courier::Client, Driver), $error>
        where
            $dialer: $crate::Dial<A, Conn = Conn, Error = $error>,
        {
            let builder = $crate::__private::courier::ClientBuilder::new()
                .timer(<$timer as ::core::default::Default>::default());
            connect_with(addr, builder).await
        }

        /// Connects to `addr` with a configured client (frame limit, calls
        /// in flight, timer).
        pub async fn connect_with<A: $bound, Tm>(
            addr: A,
            builder: $crate::__private::courier::ClientBuilder<Tm>,
        ) -> ::core::result::Result<($crate::__private::courier::Client, Driver<Tm>), $error>
        where
            $dialer: $crate::Dial<A, Conn = Conn, Error = $error>,
            Tm: $crate::__private::courier::Timer
                + ::core::clone::Clone
                + ::core::marker::Send
                + ::core::marker::Sync
                + 'static,
        {
            let dialer = <$dialer as ::core::default::Default>::default();
            $crate::connect_with(dialer, addr, builder).await
        }

        /// A client that re-dials `addr` with `policy` whenever its
        /// connection is lost, with default settings and the runtime's
        /// timer; nothing is dialed until the driver is polled.
        pub fn connect_reconnecting<A>(
            addr: A,
            policy: $crate::__private::courier::client::ReconnectPolicy,
        ) -> (
            $crate::__private::courier::Client,
            $crate::__private::courier::client::ReconnectingDriver<Connector<A>, $timer>,
        )
        where
            A: $bound + ::core::clone::Clone + ::core::marker::Send + 'static,
            $dialer: $crate::Dial<A, Conn = Conn, Error = $error>,
        {
            $crate::__private::courier::ClientBuilder::new()
                .timer(<$timer as ::core::default::Default>::default())
                .build_reconnecting(Connector::new(addr), policy)
        }

        $crate::transport_api!(@serve $listener, $timer, $bound, $error, [$($spawner)?]);
    };
    (@serve $listener:ty, $timer:ty, $bound:path, $error:ty, []) => {
        /// A [`ServeBuilder`](courier_net::ServeBuilder) with the runtime's
        /// timer, to configure limits and shutdown before
        /// [`serve`](courier_net::ServeBuilder::serve) (connections run
        /// inside the returned future) or
        /// [`serve_spawned`](courier_net::ServeBuilder::serve_spawned)
        /// (each connection a task of your executor).
        pub fn builder() -> $crate::ServeBuilder<$timer> {
            $crate::ServeBuilder::new(<$timer as ::core::default::Default>::default())
        }

        /// Serves `service` on every connection `listener` accepts, with
        /// default settings (see [`builder`] for the others); connections
        /// run inside the returned future.
        pub fn serve<S>(listener: $listener, service: S) -> $crate::Serve<$listener, S, $timer>
        where
            S: $crate::__private::courier::Service + ::core::clone::Clone,
        {
            builder().serve(listener, service)
        }

        /// Binds `addr` and serves `service` on it with default settings.
        pub async fn serve_addr<A: $bound, S>(
            addr: A,
            service: S,
        ) -> ::core::result::Result<$crate::Serve<$listener, S, $timer>, $error>
        where
            S: $crate::__private::courier::Service + ::core::clone::Clone,
        {
            ::core::result::Result::Ok(serve(<$listener>::bind(addr).await?, service))
        }
    };
    (@serve $listener:ty, $timer:ty, $bound:path, $error:ty, [$spawner:path]) => {
        /// A [`ServeBuilder`](courier_net::ServeBuilder) with the runtime's
        /// timer that spawns each connection as a task of the runtime it
        /// is called in, where that runtime has several threads (see
        /// [`SpawnEach`](courier_net::SpawnEach)); otherwise connections
        /// run inside the [`Serve`](courier_net::Serve) future.
        /// [`single_task`](courier_net::ServeBuilder::single_task) keeps
        /// them all in that future (for services that are not `Send`).
        pub fn builder() -> $crate::ServeBuilder<$timer, $crate::SpawnEach> {
            $crate::ServeBuilder::new(<$timer as ::core::default::Default>::default())
                .mode($spawner())
        }

        /// Serves `service` on every connection `listener` accepts, with
        /// default settings (see [`builder`] for the others); on a
        /// multi-thread runtime each connection is a task of its own.
        pub fn serve<S>(listener: $listener, service: S) -> $crate::Serve<$listener, S, $timer>
        where
            S: $crate::__private::courier::Service
                + ::core::clone::Clone
                + ::core::marker::Send
                + 'static,
        {
            builder().serve(listener, service)
        }

        /// Binds `addr` and serves `service` on it with default settings.
        pub async fn serve_addr<A: $bound, S>(
            addr: A,
            service: S,
        ) -> ::core::result::Result<$crate::Serve<$listener, S, $timer>, $error>
        where
            S: $crate::__private::courier::Service
                + ::core::clone::Clone
                + ::core::marker::Send
                + 'static,
        {
            ::core::result::Result::Ok(serve(<$listener>::bind(addr).await?, service))
        }
    };
}
