// Command helper does the small jobs of tests/cluster/up with the standard library only: certificates and
// keys, kubeconfigs, free loopback ports, and waiting for the control plane (readiness, Nodes Ready,
// ServiceAccounts). It talks only to 127.0.0.1.
//
//	helper pki DIR                          CA, serving and client certificates, service-account key pair
//	helper kubeconfig DIR NAME SERVER OUT   kubeconfig for client certificate DIR/NAME.crt
//	helper ports N                          N free loopback TCP ports, one a line
//	helper wait-url URL SECONDS [PID]       until GET URL (TLS not verified) answers 200 "ok";
//	                                        gives up at once when process PID has exited
//	helper node DIR NAME...                 create Nodes for kwok to manage (as admin)
//	helper wait-nodes DIR SECONDS NAME...   until those Nodes are Ready
//	helper wait-sa DIR SECONDS NS NAME      until that ServiceAccount exists
package main

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

func main() {
	if len(os.Args) < 2 {
		fail("usage: helper pki|kubeconfig|ports|wait-url|node|wait-nodes|wait-sa ...")
	}
	args := os.Args[2:]
	var err error
	switch os.Args[1] {
	case "pki":
		need(args, 1)
		err = pki(args[0])
	case "kubeconfig":
		need(args, 4)
		err = kubeconfig(args[0], args[1], args[2], args[3])
	case "ports":
		need(args, 1)
		err = ports(atoi(args[0]))
	case "wait-url":
		need(args, 2)
		pid := 0
		if len(args) > 2 {
			pid = atoi(args[2])
		}
		err = waitURL(args[0], seconds(args[1]), pid)
	case "node":
		need(args, 2)
		err = createNodes(args[0], args[1:])
	case "wait-nodes":
		need(args, 3)
		err = waitNodes(args[0], seconds(args[1]), args[2:])
	case "wait-sa":
		need(args, 4)
		err = waitServiceAccount(args[0], seconds(args[1]), args[2], args[3])
	default:
		fail("helper: unknown command " + os.Args[1])
	}
	if err != nil {
		fail("helper " + os.Args[1] + ": " + err.Error())
	}
}

func fail(msg string) {
	fmt.Fprintln(os.Stderr, msg)
	os.Exit(1)
}

func need(args []string, n int) {
	if len(args) < n {
		fail(fmt.Sprintf("helper %s: needs %d arguments", os.Args[1], n))
	}
}

func atoi(s string) int {
	n, err := strconv.Atoi(s)
	if err != nil {
		fail("not a number: " + s)
	}
	return n
}

func seconds(s string) time.Duration { return time.Duration(atoi(s)) * time.Second }

// ---- certificates ----

// client identities: file name, user name (CN), groups (O).
var clients = []struct {
	name, cn string
	groups   []string
}{
	{"admin", "admin", []string{"system:masters"}},
	{"kube-controller-manager", "system:kube-controller-manager", nil},
	{"kube-scheduler", "system:kube-scheduler", nil},
	// kwok writes Node and Pod status, Leases and deletes Pods for every node it fakes: broad rights, as
	// kwokctl gives it.
	{"kwok", "kwok", []string{"system:masters"}},
}

func pki(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	now := time.Now().Add(-time.Hour)
	clientCA, err := newCA(dir, "ca", "hashroll-test-cluster-ca", now)
	if err != nil {
		return err
	}
	// The front proxy (aggregation layer) has a CA of its own, as kubeadm sets it up: without
	// --requestheader-client-ca-file every component logs an error for its missing CA bundle.
	proxyCA, err := newCA(dir, "front-proxy-ca", "hashroll-test-front-proxy-ca", now)
	if err != nil {
		return err
	}
	err = clientCA.issue(dir, "apiserver", now, &x509.Certificate{
		Subject:     pkix.Name{CommonName: "kube-apiserver"},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames: []string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc",
			"kubernetes.default.svc.cluster.local"},
		// 10.96.0.1: the first address of --service-cluster-ip-range, the "kubernetes" Service.
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP("::1"), net.ParseIP("10.96.0.1")},
	})
	if err != nil {
		return err
	}
	err = proxyCA.issue(dir, "front-proxy-client", now, &x509.Certificate{
		Subject:     pkix.Name{CommonName: "front-proxy-client"},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	})
	if err != nil {
		return err
	}
	for _, c := range clients {
		err = clientCA.issue(dir, c.name, now, &x509.Certificate{
			Subject:     pkix.Name{CommonName: c.cn, Organization: c.groups},
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		})
		if err != nil {
			return err
		}
	}

	// The service-account token signing key pair (TokenRequest, kubectl create token).
	saKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	if err := writeKey(filepath.Join(dir, "sa.key"), saKey); err != nil {
		return err
	}
	pub, err := x509.MarshalPKIXPublicKey(&saKey.PublicKey)
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "sa.pub"), pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub}), 0o600)
}

type authority struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

// newCA makes a self-signed CA, written to DIR/NAME.crt and DIR/NAME.key.
func newCA(dir, name, cn string, now time.Time) (*authority, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: cn},
		NotBefore:             now,
		NotAfter:              now.Add(10 * 365 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &authority{cert, key}, writeCert(dir, name, der, key)
}

// issue signs a certificate from tmpl for a new key, written to DIR/NAME.crt and DIR/NAME.key.
func (ca *authority) issue(dir, name string, now time.Time, tmpl *x509.Certificate) error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	tmpl.SerialNumber = serial()
	tmpl.NotBefore = now
	tmpl.NotAfter = now.Add(10 * 365 * 24 * time.Hour)
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		return err
	}
	return writeCert(dir, name, der, key)
}

func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		fail(err.Error())
	}
	return n
}

func writeCert(dir, name string, der []byte, key *ecdsa.PrivateKey) error {
	crt := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	if err := os.WriteFile(filepath.Join(dir, name+".crt"), crt, 0o600); err != nil {
		return err
	}
	return writeKey(filepath.Join(dir, name+".key"), key)
}

func writeKey(path string, key *ecdsa.PrivateKey) error {
	der, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return err
	}
	return os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}), 0o600)
}

// ---- kubeconfig ----

func kubeconfig(dir, name, server, out string) error {
	read := func(file string) (string, error) {
		b, err := os.ReadFile(filepath.Join(dir, file))
		return base64.StdEncoding.EncodeToString(b), err
	}
	ca, err := read("ca.crt")
	if err != nil {
		return err
	}
	crt, err := read(name + ".crt")
	if err != nil {
		return err
	}
	key, err := read(name + ".key")
	if err != nil {
		return err
	}
	text := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: hashroll-test
  cluster:
    server: %s
    certificate-authority-data: %s
users:
- name: %s
  user:
    client-certificate-data: %s
    client-key-data: %s
contexts:
- name: hashroll-test
  context:
    cluster: hashroll-test
    user: %s
current-context: hashroll-test
`, server, ca, name, crt, key, name)
	return os.WriteFile(out, []byte(text), 0o600)
}

// ---- ports ----

func ports(n int) error {
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return err
		}
		ls = append(ls, l)
		fmt.Println(l.Addr().(*net.TCPAddr).Port)
	}
	return nil
}

// ---- waiting ----

func poll(timeout time.Duration, what string, try func() (bool, string)) error {
	deadline := time.Now().Add(timeout)
	last := ""
	for {
		ok, why := try()
		if ok {
			return nil
		}
		if why != "" {
			last = why
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: not ready after %s (last: %s)", what, timeout, last)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// exited tells whether process pid is gone (or a zombie).
func exited(pid int) bool {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	_, after, _ := strings.Cut(string(stat), ") ")
	return strings.HasPrefix(after, "Z") || strings.HasPrefix(after, "X")
}

func waitURL(url string, timeout time.Duration, pid int) error {
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, // the components' self-signed serving certs
	}}
	err := poll(timeout, url, func() (bool, string) {
		if pid > 0 && exited(pid) {
			return true, ""
		}
		resp, err := client.Get(url)
		if err != nil {
			return false, err.Error()
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode == 200 && strings.TrimSpace(string(body)) == "ok",
			fmt.Sprintf("%d %s", resp.StatusCode, firstLine(body))
	})
	if err == nil && pid > 0 && exited(pid) {
		return fmt.Errorf("%s: process %d exited", url, pid)
	}
	return err
}

func firstLine(b []byte) string {
	s, _, _ := strings.Cut(strings.TrimSpace(string(b)), "\n")
	return s
}

// admin is an HTTP client for the API server as the admin user, from DIR/kubeconfig's files.
type admin struct {
	server string
	client *http.Client
}

func newAdmin(dir string) (*admin, error) {
	server, err := os.ReadFile(filepath.Join(dir, "server"))
	if err != nil {
		return nil, err
	}
	cert, err := tls.LoadX509KeyPair(filepath.Join(dir, "admin.crt"), filepath.Join(dir, "admin.key"))
	if err != nil {
		return nil, err
	}
	caPEM, err := os.ReadFile(filepath.Join(dir, "ca.crt"))
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	return &admin{
		server: strings.TrimSpace(string(server)),
		client: &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
			TLSClientConfig: &tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: pool},
		}},
	}, nil
}

func (a *admin) do(method, path string, body any) (int, []byte, error) {
	var r io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return 0, nil, err
		}
		r = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, a.server+path, r)
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	resp, err := a.client.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

// createNodes creates Nodes that kwok manages (it selects them by the kwok.x-k8s.io/node=fake annotation).
// No taint: ordinary Pods and DaemonSets schedule onto them without tolerations.
func createNodes(dir string, names []string) error {
	a, err := newAdmin(dir)
	if err != nil {
		return err
	}
	for _, name := range names {
		node := map[string]any{
			"apiVersion": "v1",
			"kind":       "Node",
			"metadata": map[string]any{
				"name":        name,
				"annotations": map[string]string{"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
				"labels": map[string]string{
					"type":                   "kwok",
					"kubernetes.io/hostname": name,
					"kubernetes.io/os":       "linux",
					"kubernetes.io/arch":     "amd64",
				},
			},
		}
		code, body, err := a.do("POST", "/api/v1/nodes", node)
		if err != nil {
			return err
		}
		if code != 201 && code != 409 {
			return fmt.Errorf("create node %s: %d %s", name, code, firstLine(body))
		}
	}
	return nil
}

func waitNodes(dir string, timeout time.Duration, names []string) error {
	a, err := newAdmin(dir)
	if err != nil {
		return err
	}
	for _, name := range names {
		err := poll(timeout, "node "+name, func() (bool, string) {
			code, body, err := a.do("GET", "/api/v1/nodes/"+name, nil)
			if err != nil {
				return false, err.Error()
			}
			if code != 200 {
				return false, fmt.Sprintf("%d %s", code, firstLine(body))
			}
			var node struct {
				Status struct {
					Conditions []struct{ Type, Status string }
				}
			}
			if err := json.Unmarshal(body, &node); err != nil {
				return false, err.Error()
			}
			for _, c := range node.Status.Conditions {
				if c.Type == "Ready" {
					return c.Status == "True", "Ready=" + c.Status
				}
			}
			return false, "no Ready condition yet"
		})
		if err != nil {
			return err
		}
	}
	return nil
}

func waitServiceAccount(dir string, timeout time.Duration, ns, name string) error {
	a, err := newAdmin(dir)
	if err != nil {
		return err
	}
	return poll(timeout, "serviceaccount "+ns+"/"+name, func() (bool, string) {
		code, body, err := a.do("GET", "/api/v1/namespaces/"+ns+"/serviceaccounts/"+name, nil)
		if err != nil {
			return false, err.Error()
		}
		return code == 200, fmt.Sprintf("%d %s", code, firstLine(body))
	})
}
