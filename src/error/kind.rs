//! The kinds of failure, each with how every binding reports it: its C
//! status (`kw_status`), its Python exception and the exit code of the
//! `keyward` CLI. [`with_error_kinds!`] is the one table; the C enum and
//! Python's status table are generated from it (`KEYWARD_BLESS=1 cargo
//! test --lib generated`).

/// Calls `$then!` with every kind's row:
/// `Variant = C status number, python ExceptionClass, exit CODE;`.
macro_rules! with_error_kinds {
    ($then:ident) => {
        $then! {
            /// A required pointer argument was NULL.
            NullArgument = 100, python InvalidInput, exit 4;
            /// A text argument was not valid UTF-8.
            InvalidUtf8 = 101, python InvalidInput, exit 4;
            /// An argument was rejected (empty or oversized name, bad JSON, bad time, ...).
            InvalidInput = 102, python InvalidInput, exit 4;
            /// The text given as a key id is not one (12 base62 characters).
            InvalidKeyId = 103, python InvalidInput, exit 4;
            /// The text given as a whitelist network is not an IP or CIDR, or has host bits set.
            InvalidNetwork = 104, python InvalidInput, exit 4;
            /// The client IP is not an IPv4 or IPv6 address.
            InvalidIp = 105, python InvalidInput, exit 4;
            /// An output buffer is too small; the message says the size needed.
            BufferTooSmall = 106, python InternalError, exit 9;
            /// No key has this id.
            NotFound = 110, python NotFound, exit 3;
            /// The key has no whitelist entry with this id.
            EntryNotFound = 111, python NotFound, exit 3;
            /// An option is out of range, or conflicts with the existing store.
            InvalidOptions = 120, python InvalidInput, exit 4;
            /// Another process holds the store.
            StoreLocked = 200, python StoreLocked, exit 5;
            /// The process forked after opening this handle: open the store
            /// again in the child (e.g. in gunicorn's `post_fork` hook).
            Forked = 203, python StoreForked, exit 5;
            /// The storage layer failed; nothing was changed.
            Storage = 201, python StorageError, exit 6;
            /// The store was written by a newer keyward.
            UnsupportedVersion = 202, python StorageError, exit 6;
            /// The plugin manifest is not valid TOML or breaks a rule.
            PluginInvalidManifest = 300, python InvalidInput, exit 7;
            /// The bytes are not a `keyward:notifier` component of the manifest's API version.
            PluginInvalidComponent = 301, python InvalidInput, exit 7;
            /// A plugin with this name is installed already.
            PluginExists = 302, python InvalidInput, exit 7;
            /// No plugin has this name.
            PluginNotFound = 303, python NotFound, exit 3;
            /// This library was built without the plugin host.
            PluginsUnsupported = 304, python InternalError, exit 7;
            /// An internal failure; nothing was changed.
            Internal = 900, python InternalError, exit 9;
            /// keyward panicked; the message says where. The store is still usable.
            Panic = 901, python InternalError, exit 9;
        }
    };
}

macro_rules! define_error_kind {
    ($($(#[doc = $doc:literal])* $variant:ident = $code:literal, python $py:ident, exit $exit:literal;)*) => {
        /// What kind of failure an error is, the same in every binding: each
        /// kind has one C status (`kw_status`), one Python exception class
        /// and one exit code of the `keyward` CLI.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum ErrorKind {
            $($(#[doc = $doc])* $variant,)*
        }

        impl ErrorKind {
            /// Every kind, in the order of its C status.
            pub const ALL: &'static [ErrorKind] = &[$(ErrorKind::$variant),*];

            /// The C `kw_status` number (grouped by kind, never renumbered).
            #[must_use]
            pub const fn code(self) -> u32 {
                match self {
                    $(ErrorKind::$variant => $code,)*
                }
            }

            /// The exit code of the `keyward` CLI: 3 not found, 4 invalid
            /// input, 5 store locked, 6 storage, 7 plugin, 9 internal.
            #[must_use]
            pub const fn exit_code(self) -> u8 {
                match self {
                    $(ErrorKind::$variant => $exit,)*
                }
            }

            /// The name of the Python exception class (`keyward.NotFound`, ...).
            #[must_use]
            pub const fn python_exception(self) -> &'static str {
                match self {
                    $(ErrorKind::$variant => stringify!($py),)*
                }
            }

            /// The variant's Rust name, and its documentation.
            #[cfg(test)]
            pub(crate) fn described(self) -> (&'static str, &'static str) {
                match self {
                    $(ErrorKind::$variant => (stringify!($variant), concat!($($doc, "\n"),*)),)*
                }
            }
        }
    };
}

with_error_kinds!(define_error_kind);
