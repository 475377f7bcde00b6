import type { ViteUserConfig } from 'vitest/config';

/** Shared vitest settings: resolve sibling workspaces to their TypeScript sources. */
export const shared: ViteUserConfig = {
  resolve: { conditions: ['source', 'import', 'node', 'default'] },
  ssr: { resolve: { conditions: ['source', 'import', 'node', 'default'], externalConditions: ['source'] } },
  test: {
    testTimeout: 60_000,
    hookTimeout: 60_000,
    include: ['tests/**/*.test.ts'],
  },
};
