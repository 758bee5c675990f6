// Command keys creates and rotates deliver's keyset, with which ingest
// seals each event's Startdeliver API key for deliver alone (package
// keyseal). The private keyset is written encrypted by a Cloud KMS key;
// its public half, for ingest's API_KEY_PUBLIC_KEYSET, is not secret.
//
//	keys create -kek gcp-kms://… -out keyset.json -public-out public.json
//	keys rotate -kek gcp-kms://… -in keyset.json -out next.json -public-out public.json
//	keys retire -kek gcp-kms://… -in keyset.json -key-id N -out next.json
//	keys list   -kek gcp-kms://… -in keyset.json
//	keys public -kek gcp-kms://… -in keyset.json
//
// rotate adds a new primary key and keeps every old one, so messages sealed
// before (on the topic, on the dead-letter subscription, replayed later)
// still open. retire removes an old key: only once no message sealed with it
// can still be read, that is the topic's and the dead-letter subscription's
// retention (7 days each in infra/) after the rotation that replaced it.
// The command calls Cloud KMS to decrypt and encrypt the keyset, so it runs
// with an identity that may (infra/README.md: deliver's service account,
// impersonated). "-in -" reads standard input; output goes to standard
// output unless -out names a file.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/tink-crypto/tink-go-gcpkms/v2/integration/gcpkms"
	"github.com/tink-crypto/tink-go/v2/core/registry"
	"github.com/tink-crypto/tink-go/v2/keyset"

	"github.com/startdeliver/segment-destination/shared/command"
	"github.com/startdeliver/segment-destination/shared/keyseal"
)

const usage = `usage: keys <command> -kek gcp-kms://projects/P/locations/L/keyRings/R/cryptoKeys/K [flags]

commands:
  create  [-out F] [-public-out F]                  a new keyset with one key
  rotate  -in F [-out F] [-public-out F]            add a new primary key, keep the old ones
  retire  -in F -key-id N [-out F] [-public-out F]  remove an old key (after topic and dead-letter retention)
  list    -in F                                     keys, status and the primary
  public  -in F                                     the public keyset, for ingest's API_KEY_PUBLIC_KEYSET
`

func main() {
	command.Main("keys", usage, func(ctx context.Context) error { return run(ctx, os.Args[1:], os.Stdin, os.Stdout, nil) })
}

// run runs one command. kms, when not nil, replaces Cloud KMS (tests).
func run(ctx context.Context, args []string, stdin io.Reader, stdout io.Writer, kms registry.KMSClient) error {
	cmd, fs, args, err := command.Subcommand(args)
	if err != nil {
		return err
	}
	kekURI := fs.String("kek", "", "the Cloud KMS key that encrypts the keyset (gcp-kms://…)")
	in := fs.String("in", "", "the encrypted keyset to read (- for standard input)")
	out := fs.String("out", "", "where to write the encrypted keyset (default standard output)")
	publicOut := fs.String("public-out", "", "where to write the public keyset")
	keyID := fs.Uint("key-id", 0, "the key to retire")
	if err := command.Parse(fs, args); err != nil {
		return err
	}
	switch cmd {
	case "create", "rotate", "retire", "list", "public":
	default:
		return command.Usagef("unknown command %q", cmd)
	}
	if *kekURI == "" {
		return command.UsageError("-kek is required")
	}
	if kms == nil {
		if !strings.HasPrefix(*kekURI, "gcp-kms://") {
			return command.UsageError("-kek: want gcp-kms://projects/P/locations/L/keyRings/R/cryptoKeys/K")
		}
		c, err := gcpkms.NewClientWithOptions(ctx, "gcp-kms://")
		if err != nil {
			return fmt.Errorf("Cloud KMS client: %w", err)
		}
		kms = c
	}
	kek, err := kms.GetAEAD(*kekURI)
	if err != nil {
		return fmt.Errorf("KMS key: %w", err)
	}

	var h *keyset.Handle
	if cmd == "create" {
		if h, err = keyseal.NewKeyset(); err != nil {
			return err
		}
	} else {
		if *in == "" {
			return command.UsageError("-in is required")
		}
		data, err := readInput(*in, stdin)
		if err != nil {
			return err
		}
		if h, err = keyseal.ReadPrivate(data, kek); err != nil {
			return err
		}
	}
	switch cmd {
	case "list":
		info := h.KeysetInfo()
		for _, k := range info.GetKeyInfo() {
			mark := ""
			if k.GetKeyId() == info.GetPrimaryKeyId() {
				mark = " primary"
			}
			fmt.Fprintf(stdout, "%d %s%s\n", k.GetKeyId(), k.GetStatus(), mark)
		}
		return nil
	case "public":
		pub, err := keyseal.WritePublic(h)
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(stdout, "%s\n", pub)
		return err
	case "rotate":
		var id uint32
		if h, id, err = keyseal.Rotate(h); err != nil {
			return err
		}
		fmt.Fprintf(os.Stderr, "keys: new primary key %d\n", id)
	case "retire":
		if *keyID == 0 {
			return command.UsageError("-key-id is required")
		}
		if h, err = keyseal.Retire(h, uint32(*keyID)); err != nil {
			return err
		}
	}
	enc, err := keyseal.WritePrivate(h, kek)
	if err != nil {
		return err
	}
	if err := writeOutput(*out, stdout, enc); err != nil {
		return err
	}
	if *publicOut != "" {
		pub, err := keyseal.WritePublic(h)
		if err != nil {
			return err
		}
		if err := os.WriteFile(*publicOut, append(pub, '\n'), 0o644); err != nil {
			return fmt.Errorf("write public keyset: %w", err)
		}
	}
	return nil
}

func readInput(path string, stdin io.Reader) ([]byte, error) {
	if path == "-" {
		data, err := io.ReadAll(stdin)
		if err != nil {
			return nil, fmt.Errorf("read keyset: %w", err)
		}
		return data, nil
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read keyset: %w", err)
	}
	return data, nil
}

func writeOutput(path string, stdout io.Writer, data []byte) error {
	if path == "" {
		_, err := fmt.Fprintf(stdout, "%s\n", data)
		return err
	}
	if err := os.WriteFile(path, append(data, '\n'), 0o600); err != nil {
		return fmt.Errorf("write keyset: %w", err)
	}
	return nil
}
