// Reads the destination a connection had before an iptables REDIRECT (or any
// nat) rewrote it: getsockopt SO_ORIGINAL_DST (IPv4) or IP6T_SO_ORIGINAL_DST
// (IPv6) on an accepted socket, as linkerd2-proxy's orig_dst.rs does.
// N-API only, so one build serves every Node version with N-API 8.
#define NAPI_VERSION 8
#include <node_api.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>

#ifndef SO_ORIGINAL_DST
#define SO_ORIGINAL_DST 80 /* linux/netfilter_ipv4.h */
#endif
#ifndef IP6T_SO_ORIGINAL_DST
#define IP6T_SO_ORIGINAL_DST 80 /* linux/netfilter_ipv6/ip6_tables.h */
#endif

static napi_value throw_errno(napi_env env, int err) {
  napi_value code, message, error;
  const char *name = err == ENOENT ? "ENOENT" : err == EBADF ? "EBADF" : err == ENOTSOCK ? "ENOTSOCK" : err == ENOPROTOOPT ? "ENOPROTOOPT" : "EOTHER";
  napi_create_string_utf8(env, name, NAPI_AUTO_LENGTH, &code);
  napi_create_string_utf8(env, strerror(err), NAPI_AUTO_LENGTH, &message);
  napi_create_error(env, code, message, &error);
  napi_value errno_value;
  napi_create_int32(env, err, &errno_value);
  napi_set_named_property(env, error, "errno", errno_value);
  napi_throw(env, error);
  return NULL;
}

static napi_value make_result(napi_env env, const char *address, int port, int family) {
  napi_value result, value;
  napi_create_object(env, &result);
  napi_create_string_utf8(env, address, NAPI_AUTO_LENGTH, &value);
  napi_set_named_property(env, result, "address", value);
  napi_create_int32(env, port, &value);
  napi_set_named_property(env, result, "port", value);
  napi_create_int32(env, family, &value);
  napi_set_named_property(env, result, "family", value);
  return result;
}

// originalDestination(fd: number, family: 4 | 6): { address, port, family }
// throws an Error whose code is the errno name (ENOENT: conntrack has no entry).
static napi_value original_destination(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  int32_t fd = -1, family = 0;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 2 ||
      napi_get_value_int32(env, argv[0], &fd) != napi_ok || napi_get_value_int32(env, argv[1], &family) != napi_ok ||
      fd < 0 || (family != 4 && family != 6)) {
    napi_throw_type_error(env, "EINVAL", "originalDestination(fd, family): fd >= 0, family 4 or 6");
    return NULL;
  }
  char text[INET6_ADDRSTRLEN];
  if (family == 4) {
    struct sockaddr_in addr;
    socklen_t len = sizeof(addr);
    memset(&addr, 0, sizeof(addr));
    if (getsockopt(fd, SOL_IP, SO_ORIGINAL_DST, &addr, &len) != 0) return throw_errno(env, errno);
    inet_ntop(AF_INET, &addr.sin_addr, text, sizeof(text));
    return make_result(env, text, ntohs(addr.sin_port), 4);
  }
  struct sockaddr_in6 addr;
  socklen_t len = sizeof(addr);
  memset(&addr, 0, sizeof(addr));
  if (getsockopt(fd, SOL_IPV6, IP6T_SO_ORIGINAL_DST, &addr, &len) != 0) return throw_errno(env, errno);
  inet_ntop(AF_INET6, &addr.sin6_addr, text, sizeof(text));
  return make_result(env, text, ntohs(addr.sin6_port), 6);
}

NAPI_MODULE_INIT() {
  napi_value fn;
  napi_create_function(env, "originalDestination", NAPI_AUTO_LENGTH, original_destination, NULL, &fn);
  napi_set_named_property(env, exports, "originalDestination", fn);
  return exports;
}
