//! The kinds of failure, the same in every binding. How each surface
//! reports a kind is the surface's own: the C library's status numbers
//! and the Python exception classes are in `bindings/c` (its
//! `kinds.rs`, from which the header and the Python package's table are
//! generated), the CLI's exit codes in `cli`.

/// Calls `$then!` with every kind, its documentation above it.
macro_rules! with_error_kinds {
    ($then:ident) => {
        $then! {
            /// A required pointer argument was NULL.
            NullArgument;
            /// A text argument was not valid UTF-8.
            InvalidUtf8;
            /// An argument was rejected (empty or oversized name, bad JSON, bad time, ...).
            InvalidInput;
            /// The text given as a key id is not one (12 base62 characters).
            InvalidKeyId;
            /// The text given as a whitelist network is not an IP or CIDR, or has host bits set.
            InvalidNetwork;
            /// The client IP is not an IPv4 or IPv6 address.
            InvalidIp;
            /// An output buffer is too small; the message says the size needed.
            BufferTooSmall;
            /// No key has this id.
            NotFound;
            /// The key has no whitelist entry with this id.
            EntryNotFound;
            /// An option is out of range, or conflicts with the existing store.
            InvalidOptions;
            /// Another process holds the store.
            StoreLocked;
            /// The process forked after opening this handle: open the store
            /// again in the child (e.g. in gunicorn's `post_fork` hook).
            Forked;
            /// The storage layer failed; nothing was changed.
            Storage;
            /// The store was written by a newer keyward.
            UnsupportedVersion;
            /// The plugin manifest is not valid TOML or breaks a rule.
            PluginInvalidManifest;
            /// The bytes are not a `keyward:notifier` component of the manifest's API version.
            PluginInvalidComponent;
            /// A plugin with this name is installed already.
            PluginExists;
            /// No plugin has this name.
            PluginNotFound;
            /// This library was built without the plugin host.
            PluginsUnsupported;
            /// An internal failure; nothing was changed.
            Internal;
            /// keyward panicked; the message says where. The store is still usable.
            Panic;
        }
    };
}

macro_rules! define_error_kind {
    ($($(#[doc = $doc:literal])* $variant:ident;)*) => {
        /// What kind of failure an error is, the same in every binding: the
        /// C library, the Python package and the CLI each report a kind in
        /// their own terms (a `kw_status`, an exception class, an exit code).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum ErrorKind {
            $($(#[doc = $doc])* $variant,)*
        }

        impl ErrorKind {
            /// Every kind, in the order of the table.
            pub const ALL: &'static [ErrorKind] = &[$(ErrorKind::$variant),*];

            /// The kind's name, as in Rust (`"NotFound"`).
            #[must_use]
            pub const fn name(self) -> &'static str {
                match self {
                    $(ErrorKind::$variant => stringify!($variant),)*
                }
            }

            /// What the kind means: its documentation, one line per line.
            #[must_use]
            pub const fn description(self) -> &'static str {
                match self {
                    $(ErrorKind::$variant => concat!($($doc, "\n"),*),)*
                }
            }
        }
    };
}

with_error_kinds!(define_error_kind);
