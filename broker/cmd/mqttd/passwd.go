package main

import (
	"bufio"
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/crypto/bcrypt"
	"golang.org/x/term"

	"github.com/mqtt-operator/mqtt-operator/broker/auth"
)

const passwdUsage = `usage: mqttd passwd [--cost N] [--delete] FILE USER

Adds USER to the users file FILE (auth.users_file), or replaces its password, with a
bcrypt hash. The password is read from the terminal (asked twice), or else from the
first line of standard input; never from the command line. FILE "-" prints the line
instead (for a Kubernetes Secret). The file is replaced in one step, so a running
mqttd never reads half of it; it picks the change up within auth.reload_interval.
`

// runPasswd is `mqttd passwd`.
func runPasswd(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("mqttd passwd", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, passwdUsage) }
	cost := fs.Int("cost", bcrypt.DefaultCost, "bcrypt cost (4-31)")
	del := fs.Bool("delete", false, "remove USER instead")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		return exitConfig
	}
	if fs.NArg() != 2 {
		fs.Usage()
		return exitConfig
	}
	file, user := fs.Arg(0), fs.Arg(1)
	if err := auth.ValidUsername(user); err != nil {
		fmt.Fprintf(stderr, "mqttd passwd: %v\n", err)
		return exitConfig
	}
	line := ""
	if !*del {
		password, err := readPassword(stdin, stderr)
		if err != nil {
			fmt.Fprintf(stderr, "mqttd passwd: %v\n", err)
			return exitFailed
		}
		if line, err = auth.HashLine(user, password, *cost); err != nil {
			fmt.Fprintf(stderr, "mqttd passwd: %v\n", err)
			return exitConfig
		}
	}
	if file == "-" {
		fmt.Fprintln(stdout, line)
		return exitOK
	}
	if err := updateUsersFile(file, user, line); err != nil {
		fmt.Fprintf(stderr, "mqttd passwd: %v\n", err)
		return exitFailed
	}
	return exitOK
}

// readPassword asks twice on a terminal; otherwise it takes stdin's first line.
func readPassword(stdin io.Reader, prompt io.Writer) ([]byte, error) {
	if f, ok := stdin.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		fmt.Fprint(prompt, "Password: ")
		p1, err := term.ReadPassword(int(f.Fd()))
		fmt.Fprintln(prompt)
		if err != nil {
			return nil, err
		}
		fmt.Fprint(prompt, "Again: ")
		p2, err := term.ReadPassword(int(f.Fd()))
		fmt.Fprintln(prompt)
		if err != nil {
			return nil, err
		}
		if !bytes.Equal(p1, p2) {
			return nil, errors.New("the passwords differ")
		}
		return p1, nil
	}
	r := bufio.NewReader(io.LimitReader(stdin, 4096))
	line, err := r.ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	}
	line = strings.TrimRight(line, "\r\n")
	if line == "" {
		return nil, errors.New("no password on standard input")
	}
	return []byte(line), nil
}

// updateUsersFile replaces user's line in file with line (removes it when line is
// empty), or appends it, keeping every other line, and renames the result into place.
// The result must still parse: a broken file is never written.
func updateUsersFile(file, user, line string) error {
	old, err := os.ReadFile(file)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	var out []string
	found := false
	for _, l := range strings.Split(strings.TrimRight(string(old), "\n"), "\n") {
		if name, _, ok := strings.Cut(strings.TrimSpace(l), ":"); ok && name == user && !strings.HasPrefix(strings.TrimSpace(l), "#") {
			found = true
			if line != "" {
				out = append(out, line)
			}
			continue
		}
		if l != "" || len(out) > 0 {
			out = append(out, l)
		}
	}
	if !found {
		if line == "" {
			return fmt.Errorf("user %q is not in %s", user, file)
		}
		out = append(out, line)
	}
	data := []byte(strings.Join(out, "\n") + "\n")
	if _, err := auth.ParseUsers(bytes.NewReader(data)); err != nil {
		return fmt.Errorf("%s would not parse, left unchanged: %w", file, err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(file), ".users-*")
	if err != nil {
		return err
	}
	defer func() { _ = os.Remove(tmp.Name()) }() // gone after the rename; left over on an error
	if _, err := tmp.Write(data); err != nil {
		_ = tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		_ = tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), file)
}
