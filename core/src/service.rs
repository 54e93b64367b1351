//! The [`service!`](crate::service!) macro: a typed client and a server
//! trait from one declaration.

/// Declares a service: a server trait, a typed client and a dispatcher.
///
/// ```
/// courier::service! {
///     /// A calculator.
///     pub trait Calc {
///         /// Adds two numbers.
///         async fn add(a: u64, b: u64) -> u64;
///         /// Divides; an application error travels as a typed value.
///         async fn div(a: u64, b: u64) -> Result<u64, String>;
///         /// Returns nothing.
///         async fn ping();
///     }
/// }
/// ```
///
/// generates:
///
/// - `trait Calc: Send + Sync + 'static` with one method per RPC,
///   `fn add(&self, a: u64, b: u64) -> impl Future<Output = u64> + Send`
///   (implement it with `async fn`);
/// - `struct CalcClient`, a cloneable typed client made from a
///   [`Client`](crate::Client) with `CalcClient::new`, with one method per
///   RPC returning a [`Call`](crate::Call) that resolves to
///   `Result<u64, CallError>` — for `div`, `Result<Result<u64, String>,
///   CallError>`, so an application error is never confused with a transport
///   or protocol error — plus `with_timeout` for a client whose calls carry a
///   timeout, and one method key constant per RPC (`CalcClient::ADD`);
/// - `struct CalcServer<S>`, which wraps an implementation (`CalcServer::new(imp)`)
///   and implements [`Service`](crate::Service) for the server driver.
///
/// Arguments and results are any serde types. The method keys hash the
/// service name, the method name and the spelling of the parameter and
/// return types: two peers that disagree on a signature get
/// [`RemoteError::UnknownMethod`](crate::RemoteError::UnknownMethod). The
/// check is by spelling: changing the fields of a struct used as an argument
/// keeps its key, so version such types by name.
#[macro_export]
macro_rules! service {
    (
        $(#[$attr:meta])*
        $vis:vis trait $name:ident {
            $(
                $(#[$method_attr:meta])*
                async fn $method:ident ( $( $arg:ident : $arg_ty:ty ),* $(,)? ) $( -> $ret:ty )? ;
            )*
        }
    ) => {
        $crate::__private::paste! {
            $(#[$attr])*
            $vis trait $name: ::core::marker::Send + ::core::marker::Sync + 'static {
                $(
                    $(#[$method_attr])*
                    fn $method(&self, $($arg: $arg_ty),*)
                        -> impl ::core::future::Future<Output = $crate::__ret_ty!($($ret)?)> + ::core::marker::Send;
                )*
            }

            #[doc = concat!("Typed client of [`", stringify!($name), "`].")]
            #[derive(Clone, Debug)]
            $vis struct [<$name Client>] {
                client: $crate::Client,
                timeout: ::core::option::Option<::core::time::Duration>,
            }

            #[allow(dead_code)]
            impl [<$name Client>] {
                $(
                    #[doc = concat!("Method key of `", stringify!($method), "`.")]
                    pub const [<$method:upper>]: $crate::MethodKey = $crate::MethodKey::from_signature(
                        stringify!($name),
                        stringify!($method),
                        concat!("(", $(stringify!($arg_ty), ",",)* ")->", $crate::__ret_str!($($ret)?)),
                    );
                )*

                /// Wraps a connected client.
                pub fn new(client: $crate::Client) -> Self {
                    Self { client, timeout: ::core::option::Option::None }
                }

                /// A copy whose calls carry `timeout`.
                pub fn with_timeout(&self, timeout: ::core::time::Duration) -> Self {
                    Self { client: self.client.clone(), timeout: ::core::option::Option::Some(timeout) }
                }

                /// The untyped client underneath.
                pub fn client(&self) -> &$crate::Client {
                    &self.client
                }

                $(
                    $(#[$method_attr])*
                    pub fn $method(&self, $($arg: $arg_ty),*)
                        -> $crate::Call<'_, ($($arg_ty,)*), $crate::__ret_ty!($($ret)?)> {
                        self.client
                            .call(Self::[<$method:upper>], ($($arg,)*))
                            .with_optional_timeout(self.timeout)
                    }
                )*
            }

            #[doc = concat!("Serves an implementation of [`", stringify!($name), "`].")]
            $vis struct [<$name Server>]<S> {
                service: $crate::__private::Arc<S>,
            }

            impl<S> ::core::clone::Clone for [<$name Server>]<S> {
                fn clone(&self) -> Self {
                    Self { service: self.service.clone() }
                }
            }

            impl<S: $name> [<$name Server>]<S> {
                /// Wraps an implementation.
                pub fn new(service: S) -> Self {
                    Self { service: $crate::__private::Arc::new(service) }
                }

                /// Wraps a shared implementation.
                pub fn from_arc(service: $crate::__private::Arc<S>) -> Self {
                    Self { service }
                }
            }

            impl<S: $name> $crate::Service for [<$name Server>]<S> {
                fn dispatch(
                    &self,
                    method: $crate::MethodKey,
                    args: &[u8],
                ) -> ::core::result::Result<$crate::Handler, $crate::RemoteError> {
                    match method {
                        $(
                            [<$name Client>]::[<$method:upper>] => {
                                let ($($arg,)*): ($($arg_ty,)*) = $crate::__private::decode_args(args)?;
                                let service = self.service.clone();
                                ::core::result::Result::Ok($crate::Handler::new(async move {
                                    service.$method($($arg),*).await
                                }))
                            }
                        )*
                        _ => ::core::result::Result::Err($crate::RemoteError::UnknownMethod),
                    }
                }
            }
        }
    };
}

/// The return type of a declared method (`()` when none is written).
#[doc(hidden)]
#[macro_export]
macro_rules! __ret_ty {
    () => {
        ()
    };
    ($ret:ty) => {
        $ret
    };
}

/// The spelling of a declared method's return type.
#[doc(hidden)]
#[macro_export]
macro_rules! __ret_str {
    () => {
        "()"
    };
    ($ret:ty) => {
        stringify!($ret)
    };
}
