// Command accounts manages the accounts collection in Firestore: put an
// account from a JSON file, get, list, validate and delete. Validation runs
// before any write. The API key is never stored: the document id is its
// SHA-256, and only that id is printed.
//
//	accounts put -file acme.json -key-file key.txt   (or -key, or ACCOUNT_API_KEY)
//	accounts validate -file acme.json
//	accounts get -key-file key.txt | -id <sha256>
//	accounts list
//	accounts delete -key-file key.txt | -id <sha256>
//
// It reads GOOGLE_CLOUD_PROJECT, FIRESTORE_DATABASE, ACCOUNTS_COLLECTION and
// FIRESTORE_EMULATOR_HOST like the services, and STARTDELIVER_API_HOSTS like
// deliver: a startdeliverApiUrl must be https on an allowed host (loopback
// only on the emulator).
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"

	"github.com/startdeliver/segment-destination/shared/account"
	"github.com/startdeliver/segment-destination/shared/accountstore"
	"github.com/startdeliver/segment-destination/shared/command"
	"github.com/startdeliver/segment-destination/shared/envelope"
	"github.com/startdeliver/segment-destination/shared/gcpclient"
)

const usage = `usage: accounts <command> [flags]

commands:
  put       -file F (-key K | -key-file F | ACCOUNT_API_KEY)   validate, then write an account
  validate  -file F                                            check an account file, write nothing
  get       (-key K | -key-file F | -id ID)                    print an account
  list                                                         list accounts
  delete    (-key K | -key-file F | -id ID)                    delete an account
`

func main() {
	command.Main("accounts", usage, func(ctx context.Context) error { return run(ctx, os.Args[1:], os.Getenv, os.Stdout) })
}

func run(ctx context.Context, args []string, getenv func(string) string, out io.Writer) error {
	cmd, fs, args, err := command.Subcommand(args)
	if err != nil {
		return err
	}
	file := fs.String("file", "", "account JSON file")
	key := fs.String("key", "", "the account's Startdeliver API key")
	keyFile := fs.String("key-file", "", "file holding the API key")
	id := fs.String("id", "", "account id (SHA-256 of the key)")
	asJSON := fs.Bool("json", false, "print JSON")
	if err := command.Parse(fs, args); err != nil {
		return err
	}
	policy, err := account.APIURLPolicyFromEnv(getenv, getenv("FIRESTORE_EMULATOR_HOST") != "")
	if err != nil {
		return err
	}
	switch cmd {
	case "validate":
		a, err := readAccount(*file, policy)
		if err != nil {
			return err
		}
		fmt.Fprintf(out, "%s: valid (%s)\n", *file, describe(a))
		return nil
	case "put", "get", "delete", "list":
	default:
		return command.Usagef("unknown command %q", cmd)
	}
	var a *account.Account
	if cmd == "put" {
		var err error
		if a, err = readAccount(*file, policy); err != nil {
			return err // validated before any connection or write
		}
	}
	accountID := *id
	if cmd != "list" && accountID == "" {
		k, err := resolveKey(*key, *keyFile, getenv)
		if err != nil {
			return err
		}
		accountID = envelope.AccountID(k)
	}
	store, closeFn, err := openStore(ctx, getenv)
	if err != nil {
		return err
	}
	defer closeFn()
	switch cmd {
	case "put":
		if err := store.Put(ctx, accountID, a); err != nil {
			return err
		}
		fmt.Fprintf(out, "put account %s (%s)\n", accountID, describe(a))
	case "get":
		e, err := store.Read(ctx, accountID)
		if errors.Is(err, accountstore.ErrUnknown) {
			return fmt.Errorf("no account %s", accountID)
		}
		if err != nil {
			return err
		}
		printEntry(out, e, *asJSON)
	case "delete":
		if err := store.Delete(ctx, accountID); err != nil {
			return err
		}
		fmt.Fprintf(out, "deleted account %s\n", accountID)
	case "list":
		entries, err := store.List(ctx)
		if err != nil {
			return err
		}
		sort.Slice(entries, func(i, j int) bool { return entries[i].ID < entries[j].ID })
		for _, e := range entries {
			printEntry(out, e, *asJSON)
		}
		if !*asJSON {
			fmt.Fprintf(out, "%d accounts\n", len(entries))
		}
	}
	return nil
}

// readAccount reads and validates an account file, its startdeliverApiUrl
// against the allow-list.
func readAccount(path string, policy account.APIURLPolicy) (*account.Account, error) {
	if path == "" {
		return nil, command.UsageError("-file is required")
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read account file: %w", err)
	}
	a, err := account.Parse(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if _, err := account.Compile(a); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if err := a.CheckAPIURL(policy); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return a, nil
}

// resolveKey takes the key from -key, -key-file or ACCOUNT_API_KEY.
func resolveKey(key, keyFile string, getenv func(string) string) (string, error) {
	switch {
	case key != "":
		return key, nil
	case keyFile != "":
		data, err := os.ReadFile(keyFile)
		if err != nil {
			return "", fmt.Errorf("read key file: %w", err)
		}
		k := strings.TrimSpace(string(data))
		if k == "" {
			return "", fmt.Errorf("key file %s is empty", keyFile)
		}
		return k, nil
	case getenv("ACCOUNT_API_KEY") != "":
		return strings.TrimSpace(getenv("ACCOUNT_API_KEY")), nil
	}
	return "", command.UsageError("give the API key with -key, -key-file or ACCOUNT_API_KEY, or the account with -id")
}

func openStore(ctx context.Context, getenv func(string) string) (*accountstore.Store, func(), error) {
	project := getenv("GOOGLE_CLOUD_PROJECT")
	if project == "" {
		return nil, nil, errors.New("GOOGLE_CLOUD_PROJECT is required")
	}
	db := getenv("FIRESTORE_DATABASE")
	if db == "" {
		db = "(default)"
	}
	client, err := gcpclient.Firestore(ctx, project, db, getenv)
	if err != nil {
		return nil, nil, err
	}
	store := accountstore.New(client, accountstore.Options{Collection: getenv("ACCOUNTS_COLLECTION")})
	return store, func() { client.Close() }, nil
}

func describe(a *account.Account) string {
	parts := []string{fmt.Sprintf("name %q", a.Name), "match on " + a.Settings.StartdeliverUserCustomFieldToMatchOn}
	if a.Disabled {
		parts = append(parts, "disabled")
	}
	if a.SegmentApp.Enabled {
		parts = append(parts, "identify/group enabled")
	}
	return strings.Join(parts, ", ")
}

func printEntry(out io.Writer, e *accountstore.Entry, asJSON bool) {
	if asJSON {
		v := map[string]any{"id": e.ID, "disabled": e.Disabled}
		if e.Account != nil {
			v["account"] = e.Account.Map()
		}
		if e.Invalid != nil {
			v["invalid"] = e.Invalid.Error()
		}
		b, _ := json.Marshal(v)
		fmt.Fprintln(out, string(b))
		return
	}
	switch {
	case e.Invalid != nil:
		fmt.Fprintf(out, "%s  INVALID: %v\n", e.ID, e.Invalid)
	default:
		fmt.Fprintf(out, "%s  %s\n", e.ID, describe(e.Account))
	}
}
