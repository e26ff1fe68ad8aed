/*
Copyright 2026 The mqtt-operator Authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
You may obtain a copy of the License at

    http://www.apache.org/licenses/LICENSE-2.0

Unless required by applicable law or agreed to in writing, software
distributed under the License is distributed on an "AS IS" BASIS,
WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
See the License for the specific language governing permissions and
limitations under the License.
*/

// Command testapp is the workload of hack/local-cluster/smoke-test.sh:
//
//	testapp serve          appends "<hostname> started" to $DATA_DIR/hello.txt
//	                       (when DATA_DIR is set), then greets every TCP
//	                       connection on :7000 with "hello from <hostname>"
//	testapp dial HOST:PORT resolves HOST, connects and prints the greeting
//	testapp cat FILE       prints FILE
//	testapp whoami         asks the API server, through the kubernetes Service
//	                       and with the pod's service-account token, who it is
//	                       (a SelfSubjectReview) and prints the user name
package main

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"
)

const usage = "usage: testapp serve | dial HOST:PORT | cat FILE | whoami"

func main() {
	if len(os.Args) < 2 {
		fail(usage)
	}
	var err error
	switch cmd := os.Args[1]; {
	case cmd == "serve":
		err = serve()
	case cmd == "dial" && len(os.Args) == 3:
		err = dial(os.Args[2])
	case cmd == "cat" && len(os.Args) == 3:
		var b []byte
		b, err = os.ReadFile(os.Args[2])
		os.Stdout.Write(b)
	case cmd == "whoami":
		err = whoami()
	default:
		fail(usage)
	}
	if err != nil {
		fail(err.Error())
	}
}

func fail(msg string) {
	fmt.Fprintln(os.Stderr, "testapp:", msg)
	os.Exit(1)
}

func serve() error {
	host, _ := os.Hostname()
	if dir := os.Getenv("DATA_DIR"); dir != "" {
		f, err := os.OpenFile(filepath.Join(dir, "hello.txt"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(f, "%s started %s\n", host, time.Now().UTC().Format(time.RFC3339))
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return err
		}
	}
	ln, err := net.Listen("tcp", ":7000")
	if err != nil {
		return err
	}
	fmt.Println(host, "listening on :7000")
	for {
		c, err := ln.Accept()
		if err != nil {
			continue
		}
		_ = c.SetWriteDeadline(time.Now().Add(5 * time.Second))
		fmt.Fprintf(c, "hello from %s\n", host)
		_ = c.Close()
	}
}

func dial(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return err
	}
	addrs, err := net.LookupHost(host)
	if err != nil {
		return err
	}
	fmt.Println("resolved", host, "to", addrs)
	c, err := net.DialTimeout("tcp", net.JoinHostPort(host, port), 5*time.Second)
	if err != nil {
		return err
	}
	defer func() { _ = c.Close() }()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	fmt.Print("got: ", line)
	return nil
}

func whoami() error {
	const sa = "/var/run/secrets/kubernetes.io/serviceaccount/"
	token, err := os.ReadFile(sa + "token")
	if err != nil {
		return err
	}
	ca, err := os.ReadFile(sa + "ca.crt")
	if err != nil {
		return err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(ca) {
		return fmt.Errorf("no certificate in %sca.crt", sa)
	}
	client := &http.Client{
		Timeout:   10 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}},
	}
	body := []byte(`{"apiVersion":"authentication.k8s.io/v1","kind":"SelfSubjectReview"}`)
	req, err := http.NewRequest(http.MethodPost,
		"https://kubernetes.default.svc/apis/authentication.k8s.io/v1/selfsubjectreviews", bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+string(bytes.TrimSpace(token)))
	req.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer func() { _ = resp.Body.Close() }()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusCreated && resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", resp.Status, b)
	}
	var review struct {
		Status struct {
			UserInfo struct {
				Username string `json:"username"`
			} `json:"userInfo"`
		} `json:"status"`
	}
	if err := json.Unmarshal(b, &review); err != nil {
		return err
	}
	fmt.Println(review.Status.UserInfo.Username)
	return nil
}
