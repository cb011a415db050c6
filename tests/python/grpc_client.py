"""A gRPC C-core client (Python grpcio) against berthd's unix socket.

Calls Version, the health service and the Namespaces service over one `unix://` channel,
so that later requests reuse the HPACK state of earlier ones. Messages are encoded by hand
(no generated code, no protobuf package needed). Prints one line per check and exits 1 on
the first failure.

usage: grpc_client.py SOCKET NAMESPACE
"""

import sys

import grpc


def varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def field(num, data):
    """A length-delimited field."""
    return varint(num << 3 | 2) + varint(len(data)) + data


def fields(buf):
    """(number, wire type, value) of each field of a message."""
    i = 0
    while i < len(buf):
        key, i = read_varint(buf, i)
        num, wt = key >> 3, key & 7
        if wt == 0:
            v, i = read_varint(buf, i)
        elif wt == 2:
            n, i = read_varint(buf, i)
            v, i = buf[i : i + n], i + n
        else:
            raise ValueError("unexpected wire type %d" % wt)
        yield num, wt, v


def read_varint(buf, i):
    shift = result = 0
    while True:
        b = buf[i]
        i += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, i
        shift += 7


def call(channel, method, request, metadata=None):
    rpc = channel.unary_unary(
        method, request_serializer=lambda b: b, response_deserializer=lambda b: b
    )
    return rpc(request, timeout=10, metadata=metadata)


def main():
    socket, namespace = sys.argv[1], sys.argv[2]
    print("grpcio", grpc.__version__)
    with grpc.insecure_channel("unix://" + socket) as channel:
        resp = call(channel, "/containerd.services.version.v1.Version/Version", b"")
        version = dict((n, v) for n, _, v in fields(resp)).get(1, b"").decode()
        assert version, "empty version"
        print("ok version", version)

        resp = call(channel, "/grpc.health.v1.Health/Check", b"")
        status = dict((n, v) for n, _, v in fields(resp)).get(1)
        assert status == 1, "health status %r, want SERVING (1)" % status
        print("ok health SERVING")

        try:
            call(channel, "/grpc.health.v1.Health/Check", field(1, b"no.such.Service"))
            raise AssertionError("health of an unknown service answered")
        except grpc.RpcError as e:
            assert e.code() == grpc.StatusCode.NOT_FOUND, e
        print("ok health unknown service NOT_FOUND")

        ns = field(1, field(1, namespace.encode()) + field(2, field(1, b"via") + field(2, b"python")))
        # ctr sends the namespace header with Create too (containerd needs it for the event).
        md = [("containerd-namespace", namespace)]
        call(channel, "/containerd.services.namespaces.v1.Namespaces/Create", ns, metadata=md)
        resp = call(channel, "/containerd.services.namespaces.v1.Namespaces/List", b"")
        names = [dict((n, v) for n, _, v in fields(v)).get(1, b"").decode() for _, _, v in fields(resp)]
        assert namespace in names, "namespaces %r" % names
        print("ok namespace created and listed")

        # A namespaced call: the containerd-namespace header travels as metadata.
        resp = call(
            channel,
            "/containerd.services.containers.v1.Containers/List",
            b"",
            metadata=[("containerd-namespace", namespace)],
        )
        assert list(fields(resp)) == [], "containers %r" % resp
        try:
            call(channel, "/containerd.services.containers.v1.Containers/List", b"")
            raise AssertionError("a call without a namespace answered")
        except grpc.RpcError as e:
            assert e.code() == grpc.StatusCode.FAILED_PRECONDITION, e
        print("ok namespaced call")

        for i in range(20):
            call(channel, "/containerd.services.version.v1.Version/Version", b"")
        print("ok 20 more calls on one connection")
    print("all ok")


if __name__ == "__main__":
    main()
