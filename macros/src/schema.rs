//! `#[derive(courier::Schema)]`.

use proc_macro2::{TokenStream, TokenTree};
use quote::quote;
use syn::{parse_quote, Attribute, Data, DeriveInput, Error, Fields, GenericParam};

/// serde attributes after which the fields no longer say what goes on the
/// wire.
const SHAPE_CHANGING_SERDE: &[&str] = &[
    "transparent",
    "untagged",
    "tag",
    "content",
    "flatten",
    "skip",
    "skip_serializing",
    "skip_deserializing",
    "skip_serializing_if",
    "with",
    "serialize_with",
    "deserialize_with",
    "into",
    "from",
    "try_from",
];

/// Expands the derive on `input`.
pub(crate) fn expand(mut input: DeriveInput) -> syn::Result<TokenStream> {
    check_serde(&input.attrs)?;
    let shape = match &input.data {
        Data::Struct(data) => {
            let fields = fields(&data.fields)?;
            quote! { ::courier::schema::Shape::Tuple(&[#(#fields),*]) }
        }
        Data::Enum(data) => {
            let mut variants = Vec::new();
            for variant in &data.variants {
                check_serde(&variant.attrs)?;
                let fields = fields(&variant.fields)?;
                variants.push(quote! { &[#(#fields),*] });
            }
            quote! { ::courier::schema::Shape::Enum(&[#(#variants),*]) }
        }
        Data::Union(data) => {
            return Err(Error::new_spanned(
                data.union_token,
                "a union has no wire schema; implement `courier::Schema` by hand",
            ))
        }
    };
    for param in &mut input.generics.params {
        if let GenericParam::Type(param) = param {
            param.bounds.push(parse_quote!(::courier::Schema));
        }
    }
    let ident = &input.ident;
    let (impl_generics, type_generics, where_clause) = input.generics.split_for_impl();
    Ok(quote! {
        impl #impl_generics ::courier::Schema for #ident #type_generics #where_clause {
            const SCHEMA: &'static ::courier::schema::Shape = &#shape;
        }
    })
}

/// The schemas of the fields, in order.
fn fields(fields: &Fields) -> syn::Result<Vec<TokenStream>> {
    fields
        .iter()
        .map(|field| {
            check_serde(&field.attrs)?;
            let ty = &field.ty;
            Ok(quote! { <#ty as ::courier::Schema>::SCHEMA })
        })
        .collect()
}

/// Refuses the `#[serde(...)]` options that change the wire format.
fn check_serde(attrs: &[Attribute]) -> syn::Result<()> {
    for attr in attrs.iter().filter(|attr| attr.path().is_ident("serde")) {
        let Ok(list) = attr.meta.require_list() else {
            continue;
        };
        for token in list.tokens.clone() {
            if let TokenTree::Ident(option) = token {
                if SHAPE_CHANGING_SERDE.iter().any(|name| option == name) {
                    return Err(Error::new_spanned(
                        attr,
                        format!(
                            "`#[serde({option})]` changes what goes on the wire, so the fields do not give the wire schema; implement `courier::Schema` by hand"
                        ),
                    ));
                }
            }
        }
    }
    Ok(())
}
