package keyseal

import (
	"context"
	"errors"
	"fmt"
	"time"

	"cloud.google.com/go/firestore"
	"github.com/tink-crypto/tink-go/v2/keyset"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// DevelopmentCollection is the Firestore collection that holds the
// development keyset on the emulators, in the document "development".
const DevelopmentCollection = "keysets"

const developmentDoc = "development"

// developmentKeyset is the development keyset's document. It holds the
// private keyset in clear text: it exists only in a Firestore emulator,
// where there is no KMS and nothing to protect. Outside the emulators the
// services never read or write it (their configuration refuses to start
// without a real keyset).
type developmentKeyset struct {
	Private   string    `firestore:"private"`
	Public    string    `firestore:"public"`
	CreatedAt time.Time `firestore:"createdAt"`
}

// DevelopmentPublic returns the public half of the development keyset kept
// in the Firestore emulator, creating the keyset when it is absent. Use it
// on the emulators only. Whichever service starts first creates it;
// creation is create-if-absent, so two starting at once agree on one
// keyset.
func DevelopmentPublic(ctx context.Context, fs *firestore.Client, collection string) (*keyset.Handle, error) {
	d, err := developmentKeysetDoc(ctx, fs, collection)
	if err != nil {
		return nil, err
	}
	return ReadPublic([]byte(d.Public))
}

// DevelopmentPrivate returns the development keyset, creating it when
// absent, like DevelopmentPublic. Use it on the emulators only.
func DevelopmentPrivate(ctx context.Context, fs *firestore.Client, collection string) (*keyset.Handle, error) {
	d, err := developmentKeysetDoc(ctx, fs, collection)
	if err != nil {
		return nil, err
	}
	return readCleartextPrivate([]byte(d.Private))
}

func developmentKeysetDoc(ctx context.Context, fs *firestore.Client, collection string) (*developmentKeyset, error) {
	if collection == "" {
		collection = DevelopmentCollection
	}
	ref := fs.Collection(collection).Doc(developmentDoc)
	for range 3 {
		snap, err := ref.Get(ctx)
		if err == nil {
			var d developmentKeyset
			if err := snap.DataTo(&d); err != nil {
				return nil, fmt.Errorf("keyseal: development keyset: %w", err)
			}
			return &d, nil
		}
		if status.Code(err) != codes.NotFound {
			return nil, fmt.Errorf("keyseal: read development keyset: %w", err)
		}
		h, err := NewKeyset()
		if err != nil {
			return nil, err
		}
		priv, err := writeCleartextPrivate(h)
		if err != nil {
			return nil, err
		}
		pub, err := WritePublic(h)
		if err != nil {
			return nil, err
		}
		d := &developmentKeyset{Private: string(priv), Public: string(pub), CreatedAt: time.Now().UTC()}
		_, err = ref.Create(ctx, d)
		if err == nil {
			return d, nil
		}
		if status.Code(err) != codes.AlreadyExists {
			return nil, fmt.Errorf("keyseal: create development keyset: %w", err)
		}
		// Another service created it first: read theirs.
	}
	return nil, errors.New("keyseal: development keyset: created and gone again")
}
