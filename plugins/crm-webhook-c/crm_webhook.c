/* crm-webhook: a keyward notifier plugin in C.
 *
 * POSTs each event as JSON to the manifest's `url`, with the header
 * `auth_header_name` (default "Authorization") set to `auth_header`, if
 * configured. A 2xx/3xx answer is delivered; 4xx is a permanent failure
 * (the event goes to the dead-letter list); 5xx, a refused or failed call
 * is retryable (keyward backs off and tries again).
 *
 * Body: {"seq":1,"kind":"key.regenerated","at":"...","key_id":"...",
 *        "key_name":"...","masked_key":"...","data":{...}}
 *
 * Build: see build.sh (clang-14 --target=wasm32-wasi, then wasm-tools component new).
 */
#include <stdlib.h>
#include <string.h>

#include "notifier.h"

/* --- a growing byte buffer, without stdio ----------------------------- */

typedef struct {
    uint8_t *ptr;
    size_t len, cap;
} buf_t;

static void put(buf_t *b, const void *data, size_t n) {
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 256;
        while (cap < b->len + n) cap *= 2;
        b->ptr = realloc(b->ptr, cap);
        if (!b->ptr) abort();
        b->cap = cap;
    }
    memcpy(b->ptr + b->len, data, n);
    b->len += n;
}

static void put_str(buf_t *b, const char *s) { put(b, s, strlen(s)); }

static void put_u64(buf_t *b, uint64_t v) {
    char digits[20];
    int n = 0;
    do {
        digits[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    while (n) put(b, &digits[--n], 1);
}

/* A JSON string literal of `s`. */
static void put_json_string(buf_t *b, const notifier_string_t *s) {
    static const char hex[] = "0123456789abcdef";
    put(b, "\"", 1);
    for (size_t i = 0; i < s->len; i++) {
        uint8_t c = s->ptr[i];
        if (c == '"' || c == '\\') {
            char esc[2] = {'\\', (char)c};
            put(b, esc, 2);
        } else if (c < 0x20) {
            char esc[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
            put(b, esc, 6);
        } else {
            put(b, &c, 1);
        }
    }
    put(b, "\"", 1);
}

/* --- host helpers ------------------------------------------------------ */

static notifier_string_t lit(const char *s) {
    notifier_string_t r = {(uint8_t *)s, strlen(s)};
    return r;
}

static void log_line(keyward_notifier_host_level_t level, const char *msg) {
    notifier_string_t m = lit(msg);
    keyward_notifier_host_log(level, &m);
}

/* A config value, or `fallback` (a literal, not to be freed) when unset. */
static notifier_string_t config(const char *name, const char *fallback, bool *owned) {
    notifier_string_t key = lit(name), value;
    *owned = keyward_notifier_host_config(&key, &value);
    return *owned ? value : lit(fallback ? fallback : "");
}

/* A heap copy of `msg` for a delivery error (freed by the generated glue). */
static notifier_string_t owned_copy(const uint8_t *msg, size_t len) {
    notifier_string_t r;
    r.ptr = malloc(len ? len : 1);
    if (!r.ptr) abort();
    memcpy(r.ptr, msg, len);
    r.len = len;
    return r;
}

static bool fail(notifier_delivery_error_t *err, uint8_t tag, const char *msg) {
    err->tag = tag;
    err->val.retryable = owned_copy((const uint8_t *)msg, strlen(msg));
    return false;
}

/* --- the export -------------------------------------------------------- */

bool exports_notifier_on_event(notifier_event_t *event, notifier_delivery_error_t *err) {
    bool url_owned, auth_owned, name_owned;
    notifier_string_t url = config("url", NULL, &url_owned);
    if (!url_owned || url.len == 0) {
        keyward_notifier_types_event_free(event);
        return fail(err, KEYWARD_NOTIFIER_TYPES_DELIVERY_ERROR_PERMANENT, "config `url` is not set");
    }
    notifier_string_t auth = config("auth_header", NULL, &auth_owned);
    notifier_string_t auth_name = config("auth_header_name", "Authorization", &name_owned);

    buf_t body = {0};
    put_str(&body, "{\"seq\":");
    put_u64(&body, event->seq);
    put_str(&body, ",\"kind\":");
    put_json_string(&body, &event->kind);
    put_str(&body, ",\"at\":");
    put_json_string(&body, &event->at);
    put_str(&body, ",\"key_id\":");
    put_json_string(&body, &event->key_id);
    put_str(&body, ",\"key_name\":");
    put_json_string(&body, &event->key_name);
    put_str(&body, ",\"masked_key\":");
    put_json_string(&body, &event->masked_key);
    put_str(&body, ",\"data\":");
    put(&body, event->data.ptr, event->data.len); /* already JSON */
    put_str(&body, "}");

    notifier_tuple2_string_string_t headers[3];
    size_t n_headers = 0;
    headers[n_headers].f0 = lit("Content-Type");
    headers[n_headers++].f1 = lit("application/json");
    headers[n_headers].f0 = lit("User-Agent");
    headers[n_headers++].f1 = lit("keyward-crm-webhook/0.1.0 (C)");
    if (auth_owned && auth.len) {
        headers[n_headers].f0 = auth_name;
        headers[n_headers++].f1 = auth;
    }

    keyward_notifier_host_request_t req;
    req.method = lit("POST");
    req.url = url;
    req.headers.ptr = headers;
    req.headers.len = n_headers;
    req.body.ptr = body.ptr;
    req.body.len = body.len;

    keyward_notifier_host_response_t resp;
    notifier_string_t http_err;
    bool ok = keyward_notifier_host_http(&req, &resp, &http_err);
    free(body.ptr);
    bool delivered = false;
    if (!ok) {
        log_line(KEYWARD_NOTIFIER_HOST_LEVEL_WARN, "POST failed; will retry");
        err->tag = KEYWARD_NOTIFIER_TYPES_DELIVERY_ERROR_RETRYABLE;
        err->val.retryable = http_err; /* ownership passes to the glue */
    } else {
        uint16_t status = resp.status;
        keyward_notifier_host_response_free(&resp);
        if (status >= 500) {
            fail(err, KEYWARD_NOTIFIER_TYPES_DELIVERY_ERROR_RETRYABLE, "the CRM answered 5xx");
        } else if (status >= 400) {
            fail(err, KEYWARD_NOTIFIER_TYPES_DELIVERY_ERROR_PERMANENT, "the CRM answered 4xx");
        } else {
            log_line(KEYWARD_NOTIFIER_HOST_LEVEL_INFO, "event delivered");
            delivered = true;
        }
    }
    if (url_owned) notifier_string_free(&url);
    if (auth_owned) notifier_string_free(&auth);
    if (name_owned) notifier_string_free(&auth_name);
    keyward_notifier_types_event_free(event);
    return delivered;
}
