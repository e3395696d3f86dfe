"""`Collection`: the driver seam of the MongoDB stores.

Every call the stores make goes through one of these methods, inside `outages()`, so a
server that can't be reached comes out as `UnavailableError` wherever it happens (a
cursor's later batches included: `find` and `aggregate` read their results inside it).
"""

from collections.abc import Mapping, Sequence
from typing import Any

from pymongo import ReturnDocument
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.results import BulkWriteResult, DeleteResult, UpdateResult

from service.adapters.mongo.codec import Document
from service.adapters.mongo.outage import outages

Filter = Mapping[str, Any]
Update = Mapping[str, Any] | Sequence[Mapping[str, Any]]
"""An update document, or an update pipeline."""
Sort = Sequence[tuple[str, int]]


class Collection:
    def __init__(self, collection: AsyncCollection[Document]) -> None:
        self._collection = collection

    @property
    def name(self) -> str:
        return self._collection.name

    async def find_one(
        self,
        query: Filter,
        projection: Mapping[str, Any] | None = None,
        *,
        sort: Sort | None = None,
    ) -> Document | None:
        with outages():
            return await self._collection.find_one(
                query, projection, sort=list(sort) if sort else None
            )

    async def find(
        self,
        query: Filter,
        projection: Mapping[str, Any] | None = None,
        *,
        sort: Sort | None = None,
        skip: int = 0,
        limit: int = 0,
    ) -> list[Document]:
        """Every matching document (`limit` 0: no limit)."""
        with outages():
            cursor = self._collection.find(query, projection)
            if sort:
                cursor = cursor.sort(list(sort))
            if skip:
                cursor = cursor.skip(skip)
            if limit:
                cursor = cursor.limit(limit)
            return await cursor.to_list(None)

    async def find_one_and_update(
        self,
        query: Filter,
        update: Update,
        *,
        projection: Mapping[str, Any] | None = None,
        upsert: bool = False,
        array_filters: Sequence[Mapping[str, Any]] | None = None,
        sort: Sort | None = None,
        before: bool = False,
    ) -> Document | None:
        """The document after the update (before it, with `before`), or None."""
        returned = ReturnDocument.BEFORE if before else ReturnDocument.AFTER
        with outages():
            return await self._collection.find_one_and_update(
                query,
                update,
                projection=projection,
                upsert=upsert,
                array_filters=array_filters,
                sort=list(sort) if sort else None,
                return_document=returned,
            )

    async def update_one(
        self,
        query: Filter,
        update: Update,
        *,
        upsert: bool = False,
        array_filters: Sequence[Mapping[str, Any]] | None = None,
    ) -> UpdateResult:
        with outages():
            return await self._collection.update_one(
                query, update, upsert=upsert, array_filters=array_filters
            )

    async def update_many(self, query: Filter, update: Update) -> UpdateResult:
        with outages():
            return await self._collection.update_many(query, update)

    async def replace_one(
        self, query: Filter, document: Document, *, upsert: bool = False
    ) -> UpdateResult:
        with outages():
            return await self._collection.replace_one(query, document, upsert=upsert)

    async def insert_one(self, document: Document) -> None:
        with outages():
            await self._collection.insert_one(document)

    async def insert_many(
        self, documents: Sequence[Document], *, ordered: bool = True
    ) -> None:
        with outages():
            await self._collection.insert_many(documents, ordered=ordered)

    async def delete_one(self, query: Filter) -> DeleteResult:
        with outages():
            return await self._collection.delete_one(query)

    async def delete_many(self, query: Filter) -> DeleteResult:
        with outages():
            return await self._collection.delete_many(query)

    async def count_documents(self, query: Filter) -> int:
        with outages():
            return await self._collection.count_documents(query)

    async def aggregate(self, pipeline: Sequence[Mapping[str, Any]]) -> list[Document]:
        with outages():
            cursor = await self._collection.aggregate(list(pipeline))
            return await cursor.to_list(None)

    async def bulk_write(
        self, requests: Sequence[Any], *, ordered: bool = True
    ) -> BulkWriteResult:
        with outages():
            return await self._collection.bulk_write(list(requests), ordered=ordered)
