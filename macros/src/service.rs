//! `#[courier::service]`: parsing a trait into [`Service`] and generating
//! the trait, the client and the server from it.

use proc_macro2::TokenStream;
use quote::{format_ident, quote, quote_spanned};
use syn::ext::IdentExt;
use syn::spanned::Spanned;
use syn::{
    Attribute, Error, FnArg, Ident, Item, ItemTrait, Pat, ReturnType, TraitItem, TraitItemFn, Type,
    Visibility,
};

mod heap_free;

/// Expands the attribute on `item`.
pub(crate) fn expand(attr: TokenStream, item: TokenStream) -> syn::Result<TokenStream> {
    Ok(parse_attribute("service", attr, item)?.generate())
}

/// Expands `#[courier::heap_free_service]` on `item`.
pub(crate) fn expand_heap_free(attr: TokenStream, item: TokenStream) -> syn::Result<TokenStream> {
    parse_attribute("heap_free_service", attr, item)?.generate_heap_free()
}

fn parse_attribute(name: &str, attr: TokenStream, item: TokenStream) -> syn::Result<Service> {
    if !attr.is_empty() {
        return Err(Error::new_spanned(
            attr,
            format!("`#[courier::{name}]` takes no arguments"),
        ));
    }
    let item = match syn::parse2::<Item>(item)? {
        Item::Trait(item) => item,
        other => {
            return Err(Error::new_spanned(
                other,
                format!("`#[courier::{name}]` goes on a trait declaration"),
            ))
        }
    };
    Service::parse(item)
}

/// A parsed service declaration.
struct Service {
    /// The trait's attributes (docs), passed on to the trait.
    attrs: Vec<Attribute>,
    vis: Visibility,
    ident: Ident,
    methods: Vec<Method>,
}

/// How a method exchanges messages. Parsing ([`classify`]) decides it;
/// each generator matches on it, so a new mode is a variant plus an arm in
/// each generator.
///
/// A handler context as first parameter (`courier::Context`) is reserved
/// (rejected as "not supported yet" today).
#[derive(Clone)]
#[allow(clippy::large_enum_variant)] // a handful per service, at compile time
enum Mode {
    /// One request, one response.
    Unary,
    /// A return type `BoxStream<T>`: items of `T`, then the end.
    ServerStream { item: Type },
    /// A parameter `Streaming<T>` (at `index` among the parameters): the
    /// caller's items, then one reply.
    ClientStream { index: usize, item: Type },
    /// Both.
    Bidi {
        index: usize,
        item_in: Type,
        item_out: Type,
    },
    /// `#[oneway]`: a notification, never answered.
    Oneway,
}

/// One method of a service.
struct Method {
    /// Docs and lint attributes, passed on to the trait and the client.
    attrs: Vec<Attribute>,
    /// The name as written (possibly `r#type`).
    ident: Ident,
    /// The name without `r#`: what the key hashes.
    name: String,
    /// A first parameter `ctx: CallContext`: the handler's context, filled
    /// by the server, never sent.
    context: Option<(Ident, Type)>,
    /// The parameters after `&self` (and the context).
    params: Vec<(Ident, Type)>,
    /// The return type; `()` when none is written.
    ret: Type,
    idempotent: bool,
    mode: Mode,
}

impl Method {
    /// The streaming parameter's position and item type, if any.
    fn incoming(&self) -> Option<(usize, Type)> {
        match &self.mode {
            Mode::ClientStream { index, item } => Some((*index, item.clone())),
            Mode::Bidi { index, item_in, .. } => Some((*index, item_in.clone())),
            _ => None,
        }
    }

    /// The parameters sent in the request (all but the streaming one).
    fn sent_params(&self) -> Vec<(Ident, Type)> {
        let skip = self.incoming().map(|(index, _)| index);
        self.params
            .iter()
            .enumerate()
            .filter(|(i, _)| Some(*i) != skip)
            .map(|(_, p)| p.clone())
            .collect()
    }

    /// `ADD` for `add`: the key constant.
    fn key_const(&self) -> Ident {
        format_ident!("{}", self.name.to_uppercase(), span = self.ident.span())
    }
}

/// Names the generated client defines itself; a method cannot take them.
const RESERVED_NAMES: &[&str] = &["new", "with_timeout", "with_context", "client", "methods"];

/// Method attributes passed on as they are.
const PASSED_ATTRIBUTES: &[&str] = &["doc", "allow", "expect", "warn", "deny", "deprecated"];

impl Service {
    fn parse(item: ItemTrait) -> syn::Result<Self> {
        if let Some(unsafety) = &item.unsafety {
            return Err(Error::new_spanned(
                unsafety,
                "a service trait cannot be `unsafe`",
            ));
        }
        if let Some(auto) = &item.auto_token {
            return Err(Error::new_spanned(auto, "a service trait cannot be `auto`"));
        }
        if !item.generics.params.is_empty() || item.generics.where_clause.is_some() {
            return Err(Error::new_spanned(
                &item.generics,
                "generic service traits are not supported: a service's method keys are fixed at compile time",
            ));
        }
        if !item.supertraits.is_empty() {
            return Err(Error::new_spanned(
                &item.supertraits,
                "a service trait cannot declare supertraits; the generated trait is `Send + Sync + 'static`",
            ));
        }
        let mut methods: Vec<Method> = Vec::new();
        for trait_item in item.items {
            let TraitItem::Fn(method) = trait_item else {
                return Err(Error::new_spanned(
                    trait_item,
                    "a service trait holds only `async fn` methods",
                ));
            };
            let method = parse_method(method)?;
            if let Some(earlier) = methods.iter().find(|m| m.key_const() == method.key_const()) {
                return Err(Error::new_spanned(
                    &method.ident,
                    format!(
                        "`{}` and `{}` would share the key constant `{}`",
                        earlier.name,
                        method.name,
                        method.key_const()
                    ),
                ));
            }
            methods.push(method);
        }
        Ok(Service {
            attrs: item.attrs,
            vis: item.vis,
            ident: item.ident,
            methods,
        })
    }
}

fn parse_method(method: TraitItemFn) -> syn::Result<Method> {
    let sig = &method.sig;
    if let Some(body) = &method.default {
        return Err(Error::new_spanned(
            body,
            "a service method has no default body; implement it in `impl` of the trait",
        ));
    }
    if sig.asyncness.is_none() {
        return Err(Error::new_spanned(
            sig.fn_token,
            "service methods are `async fn`",
        ));
    }
    if let Some(constness) = &sig.constness {
        return Err(Error::new_spanned(
            constness,
            "a service method cannot be `const`",
        ));
    }
    if let Some(unsafety) = &sig.unsafety {
        return Err(Error::new_spanned(
            unsafety,
            "a service method cannot be `unsafe`",
        ));
    }
    if let Some(abi) = &sig.abi {
        return Err(Error::new_spanned(
            abi,
            "a service method cannot name an ABI",
        ));
    }
    if !sig.generics.params.is_empty() || sig.generics.where_clause.is_some() {
        return Err(Error::new_spanned(
            &sig.generics,
            "generic service methods are not supported: a method key is fixed at compile time",
        ));
    }
    if let Some(variadic) = &sig.variadic {
        return Err(Error::new_spanned(
            variadic,
            "a service method cannot be variadic",
        ));
    }
    let name = sig.ident.unraw().to_string();
    if RESERVED_NAMES.contains(&name.to_lowercase().as_str()) {
        return Err(Error::new_spanned(
            &sig.ident,
            format!("the generated client defines `{name}` itself; rename the method"),
        ));
    }

    let mut inputs = sig.inputs.iter();
    match inputs.next() {
        Some(FnArg::Receiver(receiver)) => {
            if receiver.reference.is_none() {
                return Err(Error::new_spanned(
                    receiver,
                    "a service method takes `&self`, not `self` by value",
                ));
            }
            if receiver.mutability.is_some() || receiver.colon_token.is_some() {
                return Err(Error::new_spanned(
                    receiver,
                    "a service method takes `&self`",
                ));
            }
        }
        Some(FnArg::Typed(first)) => {
            return Err(Error::new_spanned(
                first,
                "a service method takes `&self` first",
            ));
        }
        None => {
            return Err(Error::new(
                sig.paren_token.span.join(),
                "a service method takes `&self` first",
            ));
        }
    }
    let mut params = Vec::new();
    for input in inputs {
        let FnArg::Typed(param) = input else {
            // syn parses a second receiver as typed; keep the arm total.
            return Err(Error::new_spanned(input, "`self` comes first"));
        };
        let Pat::Ident(pat) = &*param.pat else {
            return Err(Error::new_spanned(
                &param.pat,
                "a service method parameter is a plain name (`name: Type`), not a pattern",
            ));
        };
        if pat.by_ref.is_some() || pat.mutability.is_some() || pat.subpat.is_some() {
            return Err(Error::new_spanned(
                pat,
                "a service method parameter is a plain name (`name: Type`), not a pattern",
            ));
        }
        if !param.attrs.is_empty() {
            return Err(Error::new_spanned(
                &param.attrs[0],
                "service method parameters take no attributes",
            ));
        }
        params.push((pat.ident.clone(), (*param.ty).clone()));
    }
    let ret = match &sig.output {
        ReturnType::Default => syn::parse_quote_spanned!(sig.paren_token.span.join()=> ()),
        ReturnType::Type(_, ty) => (**ty).clone(),
    };

    let mut attrs = Vec::new();
    let mut idempotent = false;
    let mut oneway = None;
    for attr in method.attrs {
        let path = attr.path();
        if path.is_ident("idempotent") {
            attr.meta.require_path_only()?;
            if idempotent {
                return Err(Error::new_spanned(attr, "duplicate `#[idempotent]`"));
            }
            idempotent = true;
        } else if path.is_ident("oneway") {
            oneway = Some(attr);
        } else if PASSED_ATTRIBUTES.iter().any(|name| path.is_ident(name)) {
            attrs.push(attr);
        } else {
            return Err(Error::new_spanned(
                &attr,
                "unknown attribute on a service method; expected `#[idempotent]` or doc comments",
            ));
        }
    }

    let context = match params.first() {
        Some((_, ty)) if is_path_to(ty, "CallContext") => Some(params.remove(0)),
        _ => None,
    };
    if let Some((_, ty)) = params.iter().find(|(_, ty)| is_path_to(ty, "CallContext")) {
        return Err(Error::new_spanned(
            ty,
            "the handler context comes first, right after `&self`",
        ));
    }
    let mode = classify(oneway.as_ref(), &params, &ret)?;
    Ok(Method {
        attrs,
        ident: sig.ident.clone(),
        name,
        context,
        params,
        ret,
        idempotent,
        mode,
    })
}

/// Decides a method's [`Mode`] from its spellings: `#[oneway]`, a
/// `Streaming<T>` parameter, an `impl Stream<Item = T>` return type.
fn classify(oneway: Option<&Attribute>, params: &[(Ident, Type)], ret: &Type) -> syn::Result<Mode> {
    if let Some((_, ty)) = params.first() {
        if is_path_to(ty, "Context") {
            return Err(Error::new_spanned(
                ty,
                "the handler context is `courier::CallContext`",
            ));
        }
    }
    let mut streaming = params
        .iter()
        .enumerate()
        .filter(|(_, (_, ty))| is_path_to(ty, "Streaming"));
    let incoming = match streaming.next() {
        Some((index, (_, ty))) => Some((index, generic_item(ty, "Streaming")?)),
        None => None,
    };
    if let Some((_, (_, ty))) = streaming.next() {
        return Err(Error::new_spanned(
            ty,
            "a method takes at most one `Streaming<T>` parameter",
        ));
    }
    if is_path_to(ret, "Streaming") {
        return Err(Error::new_spanned(
            ret,
            "a streamed result is written `impl Stream<Item = T> + Send + 'static`",
        ));
    }
    if let Type::ImplTrait(bounds) = ret {
        return Err(Error::new_spanned(
            bounds,
            "a streamed result is written `courier::BoxStream<T>` (an `impl Stream` would borrow the service for the stream's whole life)",
        ));
    }
    let outgoing = if is_path_to(ret, "BoxStream") {
        Some(generic_item(ret, "BoxStream")?)
    } else {
        None
    };
    if let Some(attr) = oneway {
        if incoming.is_some() || outgoing.is_some() || !is_unit(ret) {
            return Err(Error::new_spanned(
                attr,
                "a `#[oneway]` method takes no stream and returns nothing",
            ));
        }
        return Ok(Mode::Oneway);
    }
    Ok(match (incoming, outgoing) {
        (None, None) => Mode::Unary,
        (None, Some(item)) => Mode::ServerStream { item },
        (Some((index, item)), None) => Mode::ClientStream { index, item },
        (Some((index, item_in)), Some(item_out)) => Mode::Bidi {
            index,
            item_in,
            item_out,
        },
    })
}

/// `()` (also as written for a method without a return type).
fn is_unit(ty: &Type) -> bool {
    matches!(ty, Type::Tuple(tuple) if tuple.elems.is_empty())
}

/// `T` of `Streaming<T>` or `BoxStream<T>` (`what`).
fn generic_item(ty: &Type, what: &str) -> syn::Result<Type> {
    if let Type::Path(path) = ty {
        if let Some(segment) = path.path.segments.last() {
            if let syn::PathArguments::AngleBracketed(args) = &segment.arguments {
                if let (1, Some(syn::GenericArgument::Type(item))) =
                    (args.args.len(), args.args.first())
                {
                    return Ok(item.clone());
                }
            }
        }
    }
    Err(Error::new_spanned(
        ty,
        format!("expected `{what}<T>` with one item type"),
    ))
}

/// Whether `ty` reads as a `Result` (its path's last segment is `Result`):
/// the method's `Err` is then the application's error, which tracing tells
/// apart from success.
fn is_result(ty: &Type) -> bool {
    let Type::Path(path) = ty else {
        return false;
    };
    path.path
        .segments
        .last()
        .is_some_and(|segment| segment.ident == "Result")
}

/// Whether `ty` is a path whose last segment is `name`, written bare or as
/// `courier::name`.
fn is_path_to(ty: &Type, name: &str) -> bool {
    let Type::Path(path) = ty else {
        return false;
    };
    if path.qself.is_some() {
        return false;
    }
    let segments: Vec<String> = path
        .path
        .segments
        .iter()
        .map(|segment| segment.ident.to_string())
        .collect();
    match segments.as_slice() {
        [last] => last == name,
        [krate, last] => krate == "courier" && last == name,
        _ => false,
    }
}

impl Service {
    fn generate(&self) -> TokenStream {
        let trait_def = self.trait_def();
        let client = self.client();
        let server = self.server();
        quote! {
            #trait_def
            #client
            #server
        }
    }

    fn client_ident(&self) -> Ident {
        format_ident!("{}Client", self.ident)
    }

    fn server_ident(&self) -> Ident {
        format_ident!("{}Server", self.ident)
    }

    /// The trait users implement.
    fn trait_def(&self) -> TokenStream {
        let Service {
            attrs, vis, ident, ..
        } = self;
        let methods = self.methods.iter().map(|method| {
            let Method {
                attrs,
                ident,
                params,
                ret,
                ..
            } = method;
            let names = method
                .context
                .iter()
                .chain(params.iter())
                .map(|(name, _)| name);
            let types = method.context.iter().chain(params.iter()).map(|(_, ty)| ty);
            // Every mode: an async method (a streamed result is the
            // `impl Stream` the future resolves to).
            quote! {
                #(#attrs)*
                fn #ident(&self, #(#names: #types),*)
                    -> impl ::core::future::Future<Output = #ret> + ::core::marker::Send;
            }
        });
        quote! {
            #(#attrs)*
            #vis trait #ident: ::core::marker::Send + ::core::marker::Sync + 'static {
                #(#methods)*
            }
        }
    }

    /// One key constant per method (`pub const ADD: MethodKey`), the same
    /// for every generator, so that every side of a service agrees.
    pub(crate) fn key_consts(&self) -> Vec<TokenStream> {
        let service_name = self.ident.unraw().to_string();
        self.methods.iter().map(|method| {
            let key = method.key_const();
            let name = &method.name;
            let doc = format!(
                "Method key of `{name}`: hashes the service and method names and the wire schemas of the arguments and the result."
            );
            // The argument tuple's shape, written out (the shape the tuple's
            // own `Schema` impl gives) so that a type without a schema is
            // reported at that type.
            let incoming = method.incoming();
            let arg_schemas = method.params.iter().enumerate().map(|(i, (_, ty))| {
                match &incoming {
                    Some((index, item)) if *index == i => quote_spanned! {ty.span()=>
                        <::courier::schema::StreamOf<#item> as ::courier::Schema>::SCHEMA
                    },
                    _ => quote_spanned! {ty.span()=> <#ty as ::courier::Schema>::SCHEMA },
                }
            });
            let args_schema = quote! {
                &::courier::schema::Shape::Tuple(&[#(#arg_schemas),*])
            };
            let ret = &method.ret;
            let ret_schema = match &method.mode {
                Mode::ServerStream { item } | Mode::Bidi { item_out: item, .. } => {
                    quote_spanned! {ret.span()=>
                        <::courier::schema::StreamOf<#item> as ::courier::Schema>::SCHEMA
                    }
                }
                Mode::Oneway => quote! { &::courier::schema::Shape::NoReply },
                Mode::Unary | Mode::ClientStream { .. } => quote_spanned! {ret.span()=>
                    <#ret as ::courier::Schema>::SCHEMA
                },
            };
            quote! {
                #[doc = #doc]
                pub const #key: ::courier::MethodKey = ::courier::MethodKey::from_schema(
                    #service_name,
                    #name,
                    #args_schema,
                    #ret_schema,
                );
            }
        }).collect()
    }

    /// The typed client.
    fn client(&self) -> TokenStream {
        let vis = &self.vis;
        let client = self.client_ident();
        let service_name = self.ident.unraw().to_string();
        let struct_doc = format!("Typed client of [`{}`].", self.ident);

        let keys = self.key_consts();

        let infos = self.methods.iter().map(|method| {
            let key = method.key_const();
            let name = &method.name;
            let idempotent = method.idempotent;
            let fallible = matches!(method.mode, Mode::Unary | Mode::ClientStream { .. })
                && is_result(&method.ret);
            quote! {
                ::courier::MethodInfo::new(#name, Self::#key)
                    .with_service(#service_name)
                    .with_idempotent(#idempotent)
                    .with_fallible(#fallible)
            }
        });

        let calls = self.methods.iter().enumerate().map(|(index, method)| {
            let Method {
                attrs,
                ident,
                params,
                ret,
                ..
            } = method;
            let names: Vec<_> = params.iter().map(|(name, _)| name).collect();
            let types: Vec<_> = params.iter().map(|(_, ty)| ty).collect();
            let sent = method.sent_params();
            let sent_names: Vec<_> = sent.iter().map(|(name, _)| name).collect();
            let sent_types: Vec<_> = sent.iter().map(|(_, ty)| ty).collect();
            // The caller's items: any stream of the item type, in the
            // streaming parameter's place.
            let caller_params = params.iter().map(|(name, ty)| match method.incoming() {
                Some((_, item)) if is_path_to(ty, "Streaming") => quote! {
                    #name: impl ::courier::__private::Stream<Item = #item>
                        + ::core::marker::Send + 'a
                },
                _ => quote! { #name: #ty },
            });
            let items = method
                .incoming()
                .and_then(|(index, _)| params.get(index).map(|(name, _)| name.clone()));
            // The method's entry in `METHODS`: a `&'static MethodInfo` the
            // channel reads (idempotent, names for tracing).
            let info = quote! { &#client::<::courier::Client>::METHODS[#index] };
            match &method.mode {
                Mode::Unary => quote! {
                    #(#attrs)*
                    pub fn #ident(&self, #(#names: #types),*)
                        -> C::Call<'_, (#(#types,)*), #ret> {
                        ::courier::Channel::call(
                            &self.client, #info, (#(#names,)*), self.timeout,
                        )
                    }
                },
                Mode::ServerStream { item } => quote! {
                    #(#attrs)*
                    pub fn #ident(&self, #(#names: #types),*)
                        -> C::CallStream<'_, (#(#types,)*), #item> {
                        ::courier::Channel::server_stream(
                            &self.client, #info, (#(#names,)*), self.timeout,
                        )
                    }
                },
                Mode::ClientStream { .. } => quote! {
                    #(#attrs)*
                    pub fn #ident<'a>(&'a self, #(#caller_params),*)
                        -> C::Upload<'a, (#(#sent_types,)*), #ret> {
                        ::courier::Channel::client_stream(
                            &self.client, #info, (#(#sent_names,)*), #items, self.timeout,
                        )
                    }
                },
                Mode::Bidi { item_out, .. } => quote! {
                    #(#attrs)*
                    pub fn #ident<'a>(&'a self, #(#caller_params),*)
                        -> C::CallStream<'a, (#(#sent_types,)*), #item_out> {
                        ::courier::Channel::bidi_stream(
                            &self.client, #info, (#(#sent_names,)*), #items, self.timeout,
                        )
                    }
                },
                Mode::Oneway => quote! {
                    #(#attrs)*
                    pub fn #ident(&self, #(#names: #types),*) -> C::Notify<'_> {
                        ::courier::Channel::notify(&self.client, #info, &(#(#names,)*))
                    }
                },
            }
        });

        quote! {
            #[doc = #struct_doc]
            ///
            /// It calls through a [`Channel`](::courier::Channel): one
            /// connection ([`Client`](::courier::Client), the default) or
            /// anything else that carries calls, such as a load balancer.
            #[derive(Clone, Debug)]
            #vis struct #client<C = ::courier::Client> {
                client: C,
                timeout: ::core::option::Option<::core::time::Duration>,
            }

            #[allow(dead_code)]
            impl #client {
                #(#keys)*

                /// Every method in declaration order: name, key and whether it is idempotent.
                pub const METHODS: &'static [::courier::MethodInfo] = &[#(#infos),*];
            }

            #[allow(dead_code)]
            impl<C: ::courier::Channel> #client<C> {
                /// Wraps a channel: a connected client, or any other channel.
                pub fn new(client: C) -> Self {
                    Self { client, timeout: ::core::option::Option::None }
                }

                /// A copy whose calls carry `timeout`.
                pub fn with_timeout(&self, timeout: ::core::time::Duration) -> Self {
                    Self {
                        client: ::core::clone::Clone::clone(&self.client),
                        timeout: ::core::option::Option::Some(timeout),
                    }
                }

                /// The channel underneath (for the default, the untyped client).
                pub fn client(&self) -> &C {
                    &self.client
                }

                /// A copy whose calls share the deadline of a handler's call:
                /// they get the time it has left (see `Call::with_context`).
                pub fn with_context(&self, context: &::courier::CallContext) -> Self {
                    Self {
                        client: ::core::clone::Clone::clone(&self.client),
                        timeout: context.timeout_for(self.timeout),
                    }
                }

                #(#calls)*
            }
        }
    }

    /// The dispatcher.
    fn server(&self) -> TokenStream {
        let vis = &self.vis;
        let service = &self.ident;
        let client = self.client_ident();
        let server = self.server_ident();
        let struct_doc = format!("Serves an implementation of [`{service}`].");

        let arms = self.methods.iter().map(|method| {
            let Method { ident, params, .. } = method;
            let key = method.key_const();
            let names: Vec<_> = params.iter().map(|(name, _)| name).collect();
            let sent = method.sent_params();
            let sent_names: Vec<_> = sent.iter().map(|(name, _)| name).collect();
            let sent_types = sent.iter().map(|(_, ty)| ty);
            let take_context = method.context.as_ref().map(|(name, _)| {
                quote! { let #name = __courier_request.context(); }
            });
            let decode = quote! {
                let (#(#sent_names,)*): (#(#sent_types,)*) = ::courier::__private::decode_args(__courier_args)?;
                #take_context
                let __courier_service = ::core::clone::Clone::clone(&self.service);
            };
            let names: Vec<_> = method.context.iter().map(|(name, _)| name).chain(names).collect();
            let items = method
                .incoming()
                .and_then(|(index, _)| params.get(index).map(|(name, _)| name.clone()));
            let handler = match &method.mode {
                Mode::Unary | Mode::Oneway => quote! {
                    ::courier::Handler::new(async move { __courier_service.#ident(#(#names),*).await })
                },
                Mode::ServerStream { .. } => quote! {
                    ::courier::Handler::stream(async move { __courier_service.#ident(#(#names),*).await })
                },
                Mode::ClientStream { item, .. } => quote! {
                    ::courier::Handler::receiving(move |#items: ::courier::Streaming<#item>| {
                        ::courier::Handler::new(async move { __courier_service.#ident(#(#names),*).await })
                    })
                },
                Mode::Bidi { item_in, .. } => quote! {
                    ::courier::Handler::receiving(move |#items: ::courier::Streaming<#item_in>| {
                        ::courier::Handler::stream(async move { __courier_service.#ident(#(#names),*).await })
                    })
                },
            };
            quote! {
                #client::#key => {
                    #decode
                    ::core::result::Result::Ok(#handler)
                }
            }
        });

        quote! {
            #[doc = #struct_doc]
            #vis struct #server<S> {
                service: ::courier::__private::Arc<S>,
            }

            impl<S> ::core::clone::Clone for #server<S> {
                fn clone(&self) -> Self {
                    Self { service: ::core::clone::Clone::clone(&self.service) }
                }
            }

            impl<S: #service> #server<S> {
                /// Wraps an implementation.
                pub fn new(service: S) -> Self {
                    Self { service: ::courier::__private::Arc::new(service) }
                }

                /// Wraps a shared implementation.
                pub fn from_arc(service: ::courier::__private::Arc<S>) -> Self {
                    Self { service }
                }
            }

            impl<S: #service> ::courier::Service for #server<S> {
                fn dispatch(
                    &self,
                    method: ::courier::MethodKey,
                    args: &[u8],
                ) -> ::core::result::Result<::courier::Handler, ::courier::RemoteError> {
                    self.serve(&mut ::courier::server::Request::detached(method, args))
                }

                fn method_info(
                    &self,
                    method: ::courier::MethodKey,
                ) -> ::core::option::Option<&'static ::courier::MethodInfo> {
                    #client::METHODS.iter().find(|info| info.key == method)
                }

                fn serve(
                    &self,
                    __courier_request: &mut ::courier::server::Request<'_>,
                ) -> ::core::result::Result<::courier::Handler, ::courier::RemoteError> {
                    // Prefixed locals: the arms bind the methods' parameters,
                    // whatever their names.
                    let __courier_args = __courier_request.args();
                    match __courier_request.method() {
                        #(#arms)*
                        _ => ::core::result::Result::Err(::courier::RemoteError::UnknownMethod),
                    }
                }
            }
        }
    }
}
