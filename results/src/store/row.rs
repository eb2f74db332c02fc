//! `from_row!`: a struct definition plus its `sqlx::FromRow` impl, one column per field.
//!
//! This stands in for `#[derive(sqlx::FromRow)]`, whose proc-macro crate (sqlx-macros-core,
//! built for the host with both database drivers) costs minutes of every clean build. Like the
//! derive, the impl is generic over the row type, reads each field from the column of the same
//! name with `Row::try_get`, and so serves SQLite and PostgreSQL rows alike.

/// Define a struct (attributes, doc comments and visibilities as written) and implement
/// `sqlx::FromRow` for it: field `x` is read from column `x`.
macro_rules! from_row {
    (
        $(#[$meta:meta])*
        $vis:vis struct $name:ident {
            $(
                $(#[$field_meta:meta])*
                $field_vis:vis $field:ident : $ty:ty
            ),* $(,)?
        }
    ) => {
        $(#[$meta])*
        $vis struct $name {
            $(
                $(#[$field_meta])*
                $field_vis $field: $ty,
            )*
        }

        impl<'r, R: ::sqlx::Row> ::sqlx::FromRow<'r, R> for $name
        where
            &'r str: ::sqlx::ColumnIndex<R>,
            $($ty: ::sqlx::Decode<'r, R::Database> + ::sqlx::Type<R::Database>,)*
        {
            fn from_row(row: &'r R) -> ::std::result::Result<Self, ::sqlx::Error> {
                Ok($name { $($field: ::sqlx::Row::try_get(row, stringify!($field))?,)* })
            }
        }
    };
}

pub(crate) use from_row;
