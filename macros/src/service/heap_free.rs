//! `#[courier::heap_free_service]`: the trait, the method keys and a
//! dispatcher for `courier::heap_free::HeapFreeServer`, without boxing.

use proc_macro2::TokenStream;
use quote::{format_ident, quote};
use syn::{Error, Ident};

use super::{Method, Mode, Service};

impl Service {
    pub(super) fn generate_heap_free(&self) -> syn::Result<TokenStream> {
        for method in &self.methods {
            let unsupported = match method.mode {
                Mode::Unary | Mode::Oneway => None,
                _ => Some("a heap-free service has no streaming methods (they need a heap)"),
            };
            let unsupported = unsupported.or(method
                .context
                .as_ref()
                .map(|_| "a heap-free service method takes no `CallContext`"));
            if let Some(message) = unsupported {
                return Err(Error::new_spanned(&method.ident, message));
            }
        }
        let trait_def = self.heap_free_trait();
        let keys = self.keys_struct();
        let dispatcher = self.heap_free_dispatcher();
        Ok(quote! {
            #trait_def
            #keys
            #dispatcher
        })
    }

    /// The trait: no `Send`, `Sync` or `'static` bound, so handlers may
    /// borrow device state.
    fn heap_free_trait(&self) -> TokenStream {
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
            let names = params.iter().map(|(name, _)| name);
            let types = params.iter().map(|(_, ty)| ty);
            quote! {
                #(#attrs)*
                fn #ident(&self, #(#names: #types),*)
                    -> impl ::core::future::Future<Output = #ret>;
            }
        });
        quote! {
            #(#attrs)*
            #vis trait #ident {
                #(#methods)*
            }
        }
    }

    fn keys_ident(&self) -> Ident {
        format_ident!("{}Keys", self.ident)
    }

    /// `struct CalcKeys` with `CalcKeys::ADD` (the keys the std macro puts
    /// on `CalcClient`) and `METHODS`.
    fn keys_struct(&self) -> TokenStream {
        let vis = &self.vis;
        let keys_ident = self.keys_ident();
        let keys = self.key_consts();
        let doc = format!("The method keys of [`{}`].", self.ident);
        let infos = self.methods.iter().map(|method| {
            let key = method.key_const();
            let name = &method.name;
            let idempotent = method.idempotent;
            quote! {
                ::courier::MethodInfo::new(#name, Self::#key).with_idempotent(#idempotent)
            }
        });
        quote! {
            #[doc = #doc]
            #[derive(Clone, Copy, Debug)]
            #vis struct #keys_ident;

            #[allow(dead_code)]
            impl #keys_ident {
                #(#keys)*

                /// Every method in declaration order: name, key and whether it is idempotent.
                pub const METHODS: &'static [::courier::MethodInfo] = &[#(#infos),*];
            }
        }
    }

    /// `CalcHeapFree<'s, S>` and its `HeapFreeService` impl, with the enums
    /// of decoded arguments and of return values.
    fn heap_free_dispatcher(&self) -> TokenStream {
        let vis = &self.vis;
        let service = &self.ident;
        let keys = self.keys_ident();
        let server = format_ident!("{}HeapFree", self.ident);
        let args_enum = format_ident!("{}HeapFreeArgs", self.ident);
        let reply_enum = format_ident!("{}HeapFreeReply", self.ident);
        let doc = format!(
            "Serves an implementation of [`{service}`] with `courier::heap_free::HeapFreeServer`: decodes a request into [`{args_enum}`] and runs the method, one call at a time."
        );
        let variant = |method: &Method| format_ident!("M_{}", method.name);

        let arg_variants = self.methods.iter().map(|method| {
            let v = variant(method);
            let types = method.params.iter().map(|(_, ty)| ty);
            quote! { #v(#(#types),*) }
        });
        let reply_variants = self.methods.iter().map(|method| {
            let v = variant(method);
            let ret = &method.ret;
            quote! { #v(#ret) }
        });
        let serialize_arms = self.methods.iter().map(|method| {
            let v = variant(method);
            quote! { Self::#v(ref value) => ::courier::__heap_free::serde::Serialize::serialize(value, serializer), }
        });
        let decode_arms = self.methods.iter().map(|method| {
            let v = variant(method);
            let key = method.key_const();
            let names: Vec<_> = method.params.iter().map(|(name, _)| name).collect();
            let types = method.params.iter().map(|(_, ty)| ty);
            quote! {
                #keys::#key => {
                    let (#(#names,)*): (#(#types,)*) = ::courier::__heap_free::decode_args(__courier_args)?;
                    ::core::result::Result::Ok(#args_enum::#v(#(#names),*))
                }
            }
        });
        let run_arms = self.methods.iter().map(|method| {
            let v = variant(method);
            let ident = &method.ident;
            let names: Vec<_> = method.params.iter().map(|(name, _)| name).collect();
            quote! {
                #args_enum::#v(#(#names),*) => #reply_enum::#v(__courier_service.#ident(#(#names),*).await),
            }
        });
        let args_doc = format!("The decoded arguments of one call of [`{service}`].");
        let reply_doc = format!(
            "The value of one call of [`{service}`], encoded as the method's return value."
        );

        quote! {
            #[doc = #doc]
            #vis struct #server<'s, S: ?::core::marker::Sized> {
                service: &'s S,
            }

            impl<'s, S: ?::core::marker::Sized> #server<'s, S> {
                /// Serves `service`, borrowed.
                pub fn new(service: &'s S) -> Self {
                    Self { service }
                }
            }

            impl<S: ?::core::marker::Sized> ::core::clone::Clone for #server<'_, S> {
                fn clone(&self) -> Self {
                    *self
                }
            }

            impl<S: ?::core::marker::Sized> ::core::marker::Copy for #server<'_, S> {}

            #[doc = #args_doc]
            #[allow(non_camel_case_types, dead_code)]
            #vis enum #args_enum {
                #(#[doc(hidden)] #arg_variants,)*
            }

            #[doc = #reply_doc]
            #[allow(non_camel_case_types, dead_code)]
            #vis enum #reply_enum {
                #(#[doc(hidden)] #reply_variants,)*
            }

            impl ::courier::__heap_free::serde::Serialize for #reply_enum {
                fn serialize<Ser: ::courier::__heap_free::serde::Serializer>(
                    &self,
                    serializer: Ser,
                ) -> ::core::result::Result<Ser::Ok, Ser::Error> {
                    match *self {
                        #(#serialize_arms)*
                    }
                }
            }

            impl<S: #service + ?::core::marker::Sized> ::courier::heap_free::HeapFreeService
                for #server<'_, S>
            {
                type Args = #args_enum;
                type Reply = #reply_enum;

                fn decode(
                    &self,
                    __courier_method: ::courier::MethodKey,
                    __courier_args: &[u8],
                ) -> ::core::result::Result<#args_enum, ::courier::RemoteError> {
                    let _ = __courier_args;
                    match __courier_method {
                        #(#decode_arms)*
                        _ => ::core::result::Result::Err(::courier::RemoteError::UnknownMethod),
                    }
                }

                fn run(
                    &self,
                    __courier_args: #args_enum,
                ) -> impl ::core::future::Future<Output = #reply_enum> + '_ {
                    // Prefixed: the arms bind the methods' parameters.
                    let __courier_service = self.service;
                    async move {
                        match __courier_args {
                            #(#run_arms)*
                        }
                    }
                }
            }
        }
    }
}
