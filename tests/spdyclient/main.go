// spdyclient speaks to a CRI streaming server over SPDY/3.1 as Kubernetes' client-go does
// (remotecommand's v4/v3/v2 channel protocols and portforward.k8s.io), on the same SPDY
// library client-go uses (moby/spdystream, Debian's golang-github-docker-spdystream-dev).
// It prints what it got as one JSON object; a refused upgrade prints the HTTP status.
//
//	spdyclient exec -url URL [-protocols v4.channel.k8s.io,...] [-stdin TEXT [-wait 300ms]] [-stdout] [-stderr] [-tty -resize 100x40]
//
// (exec also serves an attach: the streams are the same)
//
//	spdyclient portforward -url URL -ports 8080,9 [-send TEXT]
package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/moby/spdystream"
)

func main() {
	if len(os.Args) < 2 {
		fail("usage: spdyclient exec|portforward -url URL ...")
	}
	mode := os.Args[1]
	fs := flag.NewFlagSet(mode, flag.ExitOnError)
	rawURL := fs.String("url", "", "the streaming URL")
	protocols := fs.String("protocols", "", "the X-Stream-Protocol-Version values offered")
	stdin := fs.String("stdin", "", "the input (a stdin stream when set)")
	stdout := fs.Bool("stdout", false, "open a stdout stream")
	stderr := fs.Bool("stderr", false, "open a stderr stream")
	tty := fs.Bool("tty", false, "open a resize stream")
	resize := fs.String("resize", "", "a terminal size WxH sent on the resize stream")
	ports := fs.String("ports", "", "the ports to forward, comma separated")
	send := fs.String("send", "", "what to write to each forwarded port")
	wait := fs.Duration("wait", 0, "how long to wait before writing the input")
	fs.Parse(os.Args[2:])

	switch mode {
	case "exec":
		if *protocols == "" {
			*protocols = "v4.channel.k8s.io,v3.channel.k8s.io,v2.channel.k8s.io,channel.k8s.io"
		}
		conn, chosen := upgrade(*rawURL, strings.Split(*protocols, ","))
		defer conn.Close()
		result := execStreams(conn, *stdin, *stdout, *stderr, *tty, *resize, *wait)
		result["protocol"] = chosen
		emit(result)
	case "portforward":
		if *protocols == "" {
			*protocols = "portforward.k8s.io"
		}
		conn, chosen := upgrade(*rawURL, strings.Split(*protocols, ","))
		defer conn.Close()
		var results []map[string]string
		for i, p := range strings.Split(*ports, ",") {
			results = append(results, forward(conn, i, p, *send))
		}
		emit(map[string]interface{}{"protocol": chosen, "ports": results})
	default:
		fail("unknown mode " + mode)
	}
}

// upgrade makes the HTTP/1.1 request client-go's SPDY round tripper makes and starts a
// SPDY client session on the upgraded connection.
func upgrade(rawURL string, protocols []string) (*spdystream.Connection, string) {
	u, err := url.Parse(rawURL)
	if err != nil {
		fail(err.Error())
	}
	netConn, err := net.DialTimeout("tcp", u.Host, 10*time.Second)
	if err != nil {
		fail(err.Error())
	}
	req, _ := http.NewRequest("POST", rawURL, nil)
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", "SPDY/3.1")
	for _, p := range protocols {
		req.Header.Add("X-Stream-Protocol-Version", p)
	}
	if err := req.Write(netConn); err != nil {
		fail(err.Error())
	}
	resp, err := http.ReadResponse(bufio.NewReader(netConn), req)
	if err != nil {
		fail(err.Error())
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		body, _ := io.ReadAll(resp.Body)
		emit(map[string]interface{}{"status": resp.StatusCode, "body": string(body)})
		os.Exit(0)
	}
	conn, err := spdystream.NewConnection(netConn, false)
	if err != nil {
		fail(err.Error())
	}
	go conn.Serve(spdystream.NoOpStreamHandler)
	return conn, resp.Header.Get("X-Stream-Protocol-Version")
}

func create(conn *spdystream.Connection, headers http.Header) *spdystream.Stream {
	s, err := conn.CreateStream(headers, nil, false)
	if err != nil {
		fail("create stream: " + err.Error())
	}
	if err := s.WaitTimeout(30 * time.Second); err != nil {
		fail("stream reply: " + err.Error())
	}
	return s
}

func typed(kind string) http.Header {
	h := http.Header{}
	h.Set("streamType", kind)
	return h
}

// execStreams opens the streams in client-go's order (error, stdin, stdout, stderr,
// resize), writes the input and the size, and reads every stream to its end.
func execStreams(conn *spdystream.Connection, stdin string, stdout, stderr, tty bool, resize string, wait time.Duration) map[string]interface{} {
	errorStream := create(conn, typed("error"))
	var in, out, errOut, sizes *spdystream.Stream
	if stdin != "" {
		in = create(conn, typed("stdin"))
	}
	if stdout {
		out = create(conn, typed("stdout"))
	}
	if stderr {
		errOut = create(conn, typed("stderr"))
	}
	if tty {
		sizes = create(conn, typed("resize"))
	}
	result := map[string]interface{}{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	read := func(name string, s *spdystream.Stream) {
		if s == nil {
			return
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			b, _ := io.ReadAll(s)
			mu.Lock()
			result[name] = string(b)
			mu.Unlock()
		}()
	}
	read("stdout", out)
	read("stderr", errOut)
	read("error", errorStream)
	if sizes != nil && resize != "" {
		var w, h int
		fmt.Sscanf(resize, "%dx%d", &w, &h)
		json.NewEncoder(sizes).Encode(map[string]int{"Width": w, "Height": h})
	}
	time.Sleep(wait)
	if in != nil {
		io.WriteString(in, stdin)
		in.Close()
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		fail("timed out reading the streams")
	}
	return result
}

// forward opens one port's error and data streams as client-go's port forwarder does
// (the error stream closed for writing at once), writes `send`, closes the data stream
// for writing and reads both to their ends.
func forward(conn *spdystream.Connection, requestID int, port, send string) map[string]string {
	headers := typed("error")
	headers.Set("port", port)
	headers.Set("requestID", strconv.Itoa(requestID))
	errorStream := create(conn, headers)
	errorStream.Close()
	headers.Set("streamType", "data")
	dataStream := create(conn, headers)
	errc := make(chan string, 1)
	go func() {
		b, _ := io.ReadAll(errorStream)
		errc <- string(b)
	}()
	if send != "" {
		io.WriteString(dataStream, send)
	}
	datac := make(chan string, 1)
	go func() {
		b, _ := io.ReadAll(dataStream)
		datac <- string(b)
	}()
	result := map[string]string{"port": port}
	select {
	case result["data"] = <-datac:
	case <-time.After(30 * time.Second):
		fail("timed out reading port " + port)
	}
	dataStream.Close()
	select {
	case result["error"] = <-errc:
	case <-time.After(30 * time.Second):
		fail("timed out reading the error stream of port " + port)
	}
	return result
}

func emit(v interface{}) {
	b, _ := json.Marshal(v)
	fmt.Println(string(b))
}

func fail(msg string) {
	fmt.Fprintln(os.Stderr, "spdyclient:", msg)
	os.Exit(1)
}
